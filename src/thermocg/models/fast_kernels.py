"""CPU kernels (numba) for the pair part of the inference form: forward and analytic backward.

The first HIP-NN-TS interaction layer of a one-bead-type model reads its input only as
the constant one-hot feature, so its environment is, per bead i, network g, channel c
and sensitivity nu (docs/dev/hipnn_inference.md §2.3-2.4)::

    env[g, i, c, nu] = sum_k  s_g,nu(r_ik) a_c(u_ik)
    s_g,nu(r) = exp(-1/2 sigma_g,nu^2 (1/r - 1/mu_g,nu)^2) cos^2(pi r / (2 rc)),  r < rc
    a(u) = [1, ux, uy, uz, Q(u) in 5 components],  Q = u u^T - (u.u)/3 I

(channels 1, 4 or 9 for the scalar, vector and quadrupole networks; Q's components in an
orthonormal basis of traceless symmetric tensors, :func:`_angular_column`, so that hippynn's
quadrupole norm is their plain sum of squares), with the pair vector
r_ik = x_i - x_j (minimum image) and u its direction. The repulsive prior is a sum over
the same pairs. With one bead type the kernel goes on to the interaction layer's linear
map and norms, y[g, i] = out_0 + vecscale |out_1:4| + quadscale |out_4:9| with out = env V
(:func:`_interact`), so that the (networks x beads x 9 x features) tensors never reach torch.
In torch all this is a dozen passes over (networks x pairs x sensitivities) tensors and as
many again for autograd: most of a force call (bench/RESULTS.md). Here each bead's pairs are
gathered once, in the forward pass, with what both passes need of them (:data:`PAIR_ROWS`);
the sensitivities are formed in registers in each pass; the beads run in parallel (each
writes only its own row); the arithmetic is in the positions' float type (float32 in MD).
Why our own: it is the method's network; hippynn's kernels work on its flat pair layout with
general input features, and numba has no vectorised exp, sin or cos without Intel's SVML,
hence :func:`exp_neg`, :func:`exp_neg32` and :func:`_sin_cos`.
"""

from __future__ import annotations

import math
import weakref

import numba
import numba.extending
import numpy as np
import torch


@numba.njit(inline="always", fastmath=True)
def exp_neg(x):
    """exp(x) for x <= 0 in plain arithmetic, so that loops over it vectorise: a degree-10
    Taylor polynomial at x/256, squared 8 times. Relative error below 1e-9 down to x = -100
    (measured: 3e-10; the error grows as |x| times float64's epsilon), and arguments below
    -256 read as exp(-256) ~ 7e-112."""
    y = max(x, -256.0) * 0.00390625
    p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6 + y * (1.0 / 24 + y * (1.0 / 120 + y * (
        1.0 / 720 + y * (1.0 / 5040 + y * (1.0 / 40320 + y * (1.0 / 362880 + y * (1.0 / 3628800))))))))))
    for _ in range(8):
        p = p * p
    return p


@numba.njit(inline="always")
def _pair(x, box, i, j):
    """Minimum-image r_ij = x_i - x_j: (dx, dy, dz, r)."""
    dx = x[i, 0] - x[j, 0]
    dy = x[i, 1] - x[j, 1]
    dz = x[i, 2] - x[j, 2]
    dx -= box[i, 0] * math.floor(dx / box[i, 0] + 0.5)
    dy -= box[i, 1] * math.floor(dy / box[i, 1] + 0.5)
    dz -= box[i, 2] * math.floor(dz / box[i, 2] + 0.5)
    return dx, dy, dz, math.sqrt(dx * dx + dy * dy + dz * dz)


SQRT2, SQRT1_2, SQRT3_2 = math.sqrt(2.0), math.sqrt(0.5), math.sqrt(1.5)


@numba.njit(inline="always")
def _gather(x, box, nbr, valid, i, cutoff, slot, geo):
    """Bead i's pairs within the cutoff, packed: geo[0:3, p] = (dx, dy, dz) (minimum image, as
    :func:`_pair`), slot[p] = k. Returns their number. Packing first lets the loops below run
    over contiguous pairs."""
    n_p = 0
    bx, by, bz = box[i, 0], box[i, 1], box[i, 2]
    ibx, iby, ibz = 1.0 / bx, 1.0 / by, 1.0 / bz
    c2 = cutoff * cutoff
    for k in range(valid.shape[1]):
        if not valid[i, k]:
            continue
        j = nbr[i, k]
        dx = x[i, 0] - x[j, 0]
        dy = x[i, 1] - x[j, 1]
        dz = x[i, 2] - x[j, 2]
        dx -= bx * math.floor(dx * ibx + 0.5)
        dy -= by * math.floor(dy * iby + 0.5)
        dz -= bz * math.floor(dz * ibz + 0.5)
        if dx * dx + dy * dy + dz * dz < c2:
            geo[0, n_p], geo[1, n_p], geo[2, n_p] = dx, dy, dz
            slot[n_p] = k
            n_p += 1
    return n_p


#: Taylor coefficients of sin and cos, enough for float64 on |x| <= pi/2 (the last terms are
#: below 3e-16)
_SIN = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(11))
_COS = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(12))


@numba.njit(inline="always")
def _sin_cos(x):
    """(sin x, cos x) for |x| <= pi/2 by polynomials (no library call, so that the loop over a
    bead's pairs vectorises); error below 1e-15."""
    x2 = x * x
    s = _SIN[10]
    for k in range(9, -1, -1):
        s = s * x2 + _SIN[k]
    c = _COS[11]
    for k in range(10, -1, -1):
        c = c * x2 + _COS[k]
    return s * x, c


@numba.njit(inline="always")
def _pair_values(geo, n_p, channels, h, prior, pairs_i):
    """Everything both kernels read of bead i's n_p packed pairs, as rows of pairs_i (see
    :data:`PAIR_ROWS`): the angular channels, 1/r, phi = cos^2(h r), phi' and the prior's half
    pair term's r-derivative; returns the bead's half prior terms summed. Arithmetic only
    (phi and phi' from sin/cos of 2 h r - pi/2 in [-pi/2, pi/2), the prior's exponential
    exp(-a (r - t)) from :func:`exp_neg` of -a |r - t|, inverted inside the onset)."""
    coef, decay, onset = prior[0], prior[1], prior[2]
    e_prior = 0.0
    for p in range(n_p):
        dx, dy, dz = geo[0, p], geo[1, p], geo[2, p]
        r = math.sqrt(dx * dx + dy * dy + dz * dz)
        q = 1.0 / r
        sn, cs = _sin_cos(2.0 * h * r - 0.5 * math.pi)  # cos(2 h r) = -sn, sin(2 h r) = cs
        pairs_i[9, p] = q
        pairs_i[10, p] = 0.5 * (1.0 - sn)  # cos^2(h r)
        pairs_i[11, p] = -h * cs  # d/dr cos^2(h r) = -h sin(2 h r)
        y = exp_neg(-decay * abs(r - onset))
        term = 0.5 * coef * (y if r >= onset else 1.0 / y)
        e_prior += term
        pairs_i[12, p] = -decay * term
        ux, uy, uz = dx * q, dy * q, dz * q
        pairs_i[13, p], pairs_i[14, p], pairs_i[15, p] = ux, uy, uz
        _angular_column(ux, uy, uz, channels, pairs_i, p)
    return e_prior


@numba.njit(inline="always")
def _angular_column(ux, uy, uz, channels, a, p):
    """a[:, p] = [1, u, sqrt2 Qxy, sqrt2 Qxz, sqrt2 Qyz, (Qxx - Qyy)/sqrt2, sqrt(3/2) (Qxx + Qyy)]:
    |Q|_F^2 = sum of the last five squared (hippynn: 2 (xx^2 + xy^2 + xz^2 + yy^2 + yz^2 + xx yy))."""
    a[0, p] = 1.0
    if channels > 1:
        a[1, p] = ux
        a[2, p] = uy
        a[3, p] = uz
    if channels > 4:
        tr = (ux * ux + uy * uy + uz * uz) / 3.0
        xx, yy = ux * ux - tr, uy * uy - tr
        a[4, p] = SQRT2 * ux * uy
        a[5, p] = SQRT2 * ux * uz
        a[6, p] = SQRT2 * uy * uz
        a[7, p] = SQRT1_2 * (xx - yy)
        a[8, p] = SQRT3_2 * (xx + yy)


#: the kernels' inner loops run over multiples of this many lanes (zero-weight padding): a loop of
#: 30 sensitivities or ~30 pairs left a scalar remainder that cost as much as its vector part
_LANES = 16


@numba.njit(inline="always")
def _padded(n):
    """n rounded up to a multiple of :data:`_LANES`."""
    return (n + _LANES - 1) // _LANES * _LANES


@numba.njit(inline="always")
def _pair_scratch(k_max):
    """Scratch arrays for :func:`_gather`, allocated once per parallel task (a chunk of beads),
    not once per bead: (geo (3, K) float64, slot (K,))."""
    return np.empty((3, k_max)), np.empty(k_max, dtype=np.int64)


@numba.njit(inline="always")
def _pad_pairs(n_p, pairs_i):
    """Fill the packed pairs n_p .. _padded(n_p) of pairs_i with pairs of zero weight (every
    row 0 but 1/r = 1: every term they add is zero, and finite); returns _padded(n_p)."""
    n_pad = _padded(n_p)
    for p in range(n_p, n_pad):
        for row in range(pairs_i.shape[0]):
            pairs_i[row, p] = 0.0
        pairs_i[9, p] = 1.0
    return n_pad


#: beads per parallel task of the kernels (their scratch arrays are allocated once per task)
_CHUNK = 32

_F32 = np.float32
_T1, _T2, _T3, _T4, _T5, _T6, _T7, _T8 = (np.float32(1.0 / math.factorial(k)) for k in range(1, 9))


@numba.njit(inline="always", fastmath=True)
def exp_neg32(x):
    """:func:`exp_neg` in float32 (twice the vector lanes): a degree-8 Taylor polynomial at
    x/32, squared 5 times. Relative error below 1e-5 for x > -20 (measured 7e-6: float32's
    rounding, doubled by each squaring; tested) and 2e-4 near -32, where exp is 1e-14;
    arguments below -32 read as exp(-32). The forces of the float32 form stay as close to
    float64 as with torch's exp (tested)."""
    y = max(x, _F32(-32.0)) * _F32(0.03125)
    p = _F32(1.0) + y * (_T1 + y * (_T2 + y * (_T3 + y * (_T4 + y * (_T5 + y * (_T6 + y * (_T7 + y * _T8)))))))
    for _ in range(5):
        p = p * p
    return p


@numba.njit(inline="always")
def _channel_products(env_gi, v, out):
    """out (C, O) = env_gi (C, NU) V (NU, O): the interaction layer's linear map of one bead's
    environment, per angular channel."""
    out[:] = 0.0
    for c in range(env_gi.shape[0]):
        for nu in range(env_gi.shape[1]):
            w = env_gi[c, nu]
            for o in range(out.shape[1]):
                out[c, o] += w * v[nu, o]


@numba.njit(inline="always")
def _norms(out, o, cusp, zero):
    """hippynn's vector and quadrupole norms of column o of out (C, O), with the cusp (``zero``,
    of out's type, for the channels a network lacks: a float64 0.0 would make the callers'
    arithmetic float64, 1.3x slower)."""
    channels = out.shape[0]
    nv = math.sqrt(out[1, o] ** 2 + out[2, o] ** 2 + out[3, o] ** 2 + cusp) if channels > 1 else zero
    nq = (math.sqrt(out[4, o] ** 2 + out[5, o] ** 2 + out[6, o] ** 2 + out[7, o] ** 2 + out[8, o] ** 2 + cusp)
          if channels > 4 else zero)
    return nv, nq


@numba.njit(inline="always")
def _interact(env_gi, inter, g, out, y, zero):
    """The pair part of hippynn's interaction layer for one bead and network g: y (O,) = out_0 +
    vecscale |out_1:4| + quadscale |out_4:9| (norms with the cusp), out = env V
    (:func:`_channel_products`), so that the (G, M, C, O) tensor is never formed; ``zero`` of
    out's type."""
    v, vecscale, quadscale, cusp = inter
    _channel_products(env_gi, v[g], out)
    for o in range(out.shape[1]):
        nv, nq = _norms(out, o, cusp, zero)
        y[o] = out[0, o] + vecscale[g, o] * nv + quadscale[g, o] * nq


@numba.njit(inline="always")
def _interact_backward(out, inter, g, gy, g_out, genv_gi, zero):
    """genv_gi (C, NU) = dL/d env of one bead and network g from gy (O,) = dL/d y of
    :func:`_interact` and its forward pass's out (C, O): d|v|/dv = v / |v|, then through V.
    ``zero`` of out's type (a float64 0.0 would make the sums float64: 1.5x slower)."""
    v, vecscale, quadscale, cusp = inter
    channels = out.shape[0]
    for o in range(out.shape[1]):
        nv, nq = _norms(out, o, cusp, zero)
        g_out[0, o] = gy[o]
        if channels > 1:
            k = gy[o] * vecscale[g, o] / nv
            for c in range(1, 4):
                g_out[c, o] = k * out[c, o]
        if channels > 4:
            k = gy[o] * quadscale[g, o] / nq
            for c in range(4, 9):
                g_out[c, o] = k * out[c, o]
    for c in range(channels):
        for nu in range(genv_gi.shape[1]):
            acc = zero
            for o in range(out.shape[1]):
                acc += g_out[c, o] * v[g, nu, o]
            genv_gi[c, nu] = acc


#: rows of the per-pair data the forward kernel keeps for the backward: the angular channels a
#: (0-8), 1/r, phi = cos^2, phi', d/dr of half the prior's pair term, the unit vector u (13-15)
#: and the pair's candidate slot (16; exact as a float below 2^24)
PAIR_ROWS = 17


def exp_neg_typed(x):
    """:func:`exp_neg` for a float64 x, :func:`exp_neg32` for a float32 one (chosen when numba
    compiles the caller: the kernels below are one function for both types)."""
    raise NotImplementedError("exp_neg_typed runs only inside numba-compiled code")


@numba.extending.overload(exp_neg_typed, inline="always")
def _exp_neg_typed(x):
    if x == numba.types.float32:
        return lambda x: exp_neg32(x)
    return lambda x: exp_neg(x)


@numba.njit(inline="always")
def _constants(inv_mu, sig2, cutoff):
    """(n_j, 1/mu and sigma^2 flattened over (G, NU) and padded to n_j, a multiple of
    :data:`_LANES`, pi / (2 rc), -1/2 and 0 of the arrays' type): what both kernels read of the
    sensitivities and the cutoff. The inner loops' constants are of the arrays' float type, so
    that no operation there is promoted to float64 (float32 in MD)."""
    n_j = _padded(inv_mu.size)
    imu, s2 = np.zeros(n_j, inv_mu.dtype), np.zeros(n_j, inv_mu.dtype)  # padding: exp(0) into unread columns
    imu[:inv_mu.size], s2[:inv_mu.size] = inv_mu.ravel(), sig2.ravel()
    return n_j, imu, s2, math.pi / 2.0 / cutoff, np.full(1, -0.5, inv_mu.dtype)[0], np.zeros(1, inv_mu.dtype)[0]


@numba.njit(parallel=True, fastmath=True, cache=True)
def pair_forward(x, box, nbr, valid, inv_mu, sig2, cutoff, channels, prior, inter, env, prior_bead, pairs,
                 count, y_pair, outs):  # pragma: no cover
    """env (G, M, C, NU): the environment; prior_bead (M,): half of each of the bead's prior
    pair terms; pairs (M, PAIR_ROWS, K'), count (M,): what the backward pass needs of each
    bead's pairs within the cutoff (:data:`PAIR_ROWS`), packed and padded to K' =
    _padded(K) (one gather of the geometry, the cosine and the exponentials for both passes).
    With ``inter`` = (V (G, NU, O), vecscale (G, O), quadscale (G, O), cusp) (G = 0: none),
    y_pair (G, M, O) gets the interaction layer's pair part, :func:`_interact`, and outs
    (G, M, C, O) its linear map per channel, for the backward pass.

    x, box (M, 3): positions and each bead's box edges; nbr, valid (M, K): candidates;
    inv_mu, sig2 (G, NU): 1/mu and sigma^2, of x's type; prior: (s p / a, a, t) of the pair
    prior. The inner loops run over the G*NU sensitivities as rank-one updates (no
    reductions), which is what lets them vectorise.
    """
    m, k_max = valid.shape
    g_n, nu_n = inv_mu.shape
    n_j, imu, s2, h, MHALF, ZERO = _constants(inv_mu, sig2, cutoff)
    for chunk in numba.prange((m + _CHUNK - 1) // _CHUNK):
        geo, slot = _pair_scratch(k_max)
        s = np.empty(n_j, imu.dtype)
        acc = np.empty((channels, n_j), imu.dtype)
        for i in range(chunk * _CHUNK, min(m, (chunk + 1) * _CHUNK)):
            pairs_i = pairs[i]
            a, q, phi = pairs_i[0:9], pairs_i[9], pairs_i[10]
            n_p = _gather(x, box, nbr, valid, i, cutoff, slot, geo)
            prior_bead[i] = _pair_values(geo, n_p, channels, h, prior, pairs_i)
            _pad_pairs(n_p, pairs_i)
            count[i] = n_p
            for p in range(n_p):
                pairs_i[16, p] = slot[p]
            acc[:] = ZERO
            for p in range(n_p):
                qp, ph = q[p], phi[p]
                for j in range(n_j):
                    t = qp - imu[j]
                    s[j] = exp_neg_typed(MHALF * t * t * s2[j]) * ph
                for c in range(channels):
                    ac = a[c, p]
                    for j in range(n_j):
                        acc[c, j] += ac * s[j]
            for g in range(g_n):
                for c in range(channels):
                    for nu in range(nu_n):
                        env[g, i, c, nu] = acc[c, g * nu_n + nu]
                if inter[0].shape[0]:
                    _interact(env[g, i], inter, g, outs[g, i], y_pair[g, i], ZERO)


@numba.njit(parallel=True, fastmath=True, cache=True)
def pair_backward(valid, inv_mu, sig2, cutoff, channels, prior, inter, pairs, count, outs, genv, g_y0, gprior,
                  gpair):  # pragma: no cover
    """gpair (M, K, 3) = dL/d r_ik from genv = dL/d env (G, M, C, NU), or with ``inter`` from
    g_y0 = dL/d y_pair (G, M, O) and the forward pass's outs, and gprior = dL/d prior_bead (M,),
    with the forward pass's pairs and count. Inner loops over the bead's pairs, as rank-one
    updates."""
    m, k_max = valid.shape
    g_n, nu_n = inv_mu.shape
    n_j, imu, s2, h, MHALF, ZERO = _constants(inv_mu, sig2, cutoff)
    for chunk in numba.prange((m + _CHUNK - 1) // _CHUNK):
        k_pad = _padded(k_max)
        ga = np.empty((9, k_pad), imu.dtype)
        dl_dr = np.empty(k_pad, imu.dtype)
        e, ephi, ds = np.empty(k_pad, imu.dtype), np.empty(k_pad, imu.dtype), np.empty(k_pad, imu.dtype)
        genv_i = np.empty((g_n, channels, nu_n), imu.dtype)
        g_out = np.empty((channels, inter[0].shape[2]), imu.dtype)
        for i in range(chunk * _CHUNK, min(m, (chunk + 1) * _CHUNK)):
            if inter[0].shape[0]:
                for g in range(g_n):
                    _interact_backward(outs[g, i], inter, g, g_y0[g, i], g_out, genv_i[g], ZERO)
            else:
                genv_i[:] = genv[:, i]
            n_p = count[i]
            n_pad = _padded(n_p)
            a, q, phi, dphi = pairs[i, 0:9], pairs[i, 9], pairs[i, 10], pairs[i, 11]
            ga[:, :n_pad] = ZERO
            gp = gprior[i]
            for p in range(n_pad):
                dl_dr[p] = pairs[i, 12, p] * gp
            for j in range(g_n * nu_n):  # the real sensitivities (the padding's gradient is zero)
                g, nu = j // nu_n, j % nu_n
                imu_j, s2_j = imu[j], s2[j]
                for p in range(n_pad):
                    t = q[p] - imu_j
                    e[p] = exp_neg_typed(MHALF * t * t * s2_j)
                    ephi[p] = e[p] * phi[p]
                    ds[p] = ZERO
                for c in range(channels):
                    gv = genv_i[g, c, nu]
                    for p in range(n_pad):
                        ds[p] += gv * a[c, p]  # dL/ds
                        ga[c, p] += gv * ephi[p]  # dL/da
                # ds/dr = e (sigma^2 t q^2 phi + phi')   (dt/dr = -q^2)
                for p in range(n_pad):
                    t = q[p] - imu_j
                    dl_dr[p] += ds[p] * e[p] * (s2_j * t * q[p] * q[p] * phi[p] + dphi[p])
            for k in range(k_max):
                gpair[i, k, 0] = gpair[i, k, 1] = gpair[i, k, 2] = 0.0
            for p in range(n_p):
                ux, uy, uz = pairs[i, 13, p], pairs[i, 14, p], pairs[i, 15, p]
                # dL/du from the angular channels (the trace's gradient lies along u and drops out below)
                gx = gy = gz = ZERO
                if channels > 1:
                    gx += ga[1, p]
                    gy += ga[2, p]
                    gz += ga[3, p]
                if channels > 4:  # d a[4:9] / du, dropping the trace (along u)
                    gx += SQRT2 * (ga[4, p] * uy + ga[5, p] * uz) + 2.0 * ux * (SQRT1_2 * ga[7, p] + SQRT3_2 * ga[8, p])
                    gy += SQRT2 * (ga[4, p] * ux + ga[6, p] * uz) + 2.0 * uy * (SQRT3_2 * ga[8, p] - SQRT1_2 * ga[7, p])
                    gz += SQRT2 * (ga[5, p] * ux + ga[6, p] * uy)
                along = gx * ux + gy * uy + gz * uz
                k = int(pairs[i, 16, p])
                gpair[i, k, 0] = dl_dr[p] * ux + (gx - along * ux) * q[p]
                gpair[i, k, 1] = dl_dr[p] * uy + (gy - along * uy) * q[p]
                gpair[i, k, 2] = dl_dr[p] * uz + (gz - along * uz) * q[p]


#: the dtypes the pair kernels run in: float64 (the reference) and float32 (MD)
PAIR_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


@numba.njit(cache=True)
def pad_pairs(first, second, m):  # pragma: no cover
    """The padded candidate layout of a half pair list (each pair (i, j) once): (neighbours (M, K)
    int64, valid (M, K) bool), K the largest number of neighbours of a bead; row i holds its
    neighbours in the order of the list, and empty slots point at the bead itself."""
    counts = np.zeros(m, dtype=np.int64)
    for p in range(len(first)):
        counts[first[p]] += 1
        counts[second[p]] += 1
    width = max(1, counts.max()) if m else 1
    neighbours = np.empty((m, width), dtype=np.int64)
    valid = np.zeros((m, width), dtype=np.bool_)
    for i in range(m):
        for k in range(width):
            neighbours[i, k] = i
    fill = np.zeros(m, dtype=np.int64)
    for p in range(len(first)):
        i, j = first[p], second[p]
        neighbours[i, fill[i]] = j
        valid[i, fill[i]] = True
        fill[i] += 1
        neighbours[j, fill[j]] = i
        valid[j, fill[j]] = True
        fill[j] += 1
    return neighbours, valid


@numba.njit(cache=True)
def scatter_pairs(nbr, valid, gpair, grad):  # pragma: no cover
    """grad (M, 3) += dL/dx from the pair gradients: +g on bead i, -g on its neighbour j
    (serial: the j side would race in parallel, and it is one pass over the pairs)."""
    m, k_max = valid.shape
    for i in range(m):
        for k in range(k_max):
            if valid[i, k]:
                j = nbr[i, k]
                for c in range(3):
                    grad[i, c] += gpair[i, k, c]
                    grad[j, c] -= gpair[i, k, c]


@numba.njit(parallel=True, fastmath=True, cache=True)
def prior_forces(x, box, nbr, valid, cutoff, prior, energy_bead, forces):  # pragma: no cover
    """The pair prior alone, for the substeps of multiple time stepping: energy_bead (M,) half of
    each of the bead's pair terms phi(r) = (s p / a) exp(-a (r - t)) within the cutoff, forces
    (M, 3) = sum_j a phi(r_ij) r_ij / r_ij (every pair is in both beads' rows)."""
    coef, decay, onset = prior[0], prior[1], prior[2]
    for i in numba.prange(x.shape[0]):
        e = fx = fy = fz = 0.0
        for k in range(valid.shape[1]):
            if not valid[i, k]:
                continue
            dx, dy, dz, r = _pair(x, box, i, nbr[i, k])
            if r < cutoff:
                phi = coef * math.exp(-decay * (r - onset))
                e += 0.5 * phi
                g = decay * phi / r
                fx += g * dx
                fy += g * dy
                fz += g * dz
        energy_bead[i] = e
        forces[i, 0], forces[i, 1], forces[i, 2] = fx, fy, fz


@numba.njit(inline="always")
def _bspline4(r, origin, step, n, row, idx, values, derivs):
    """The (at most) four cubic B-splines of origins origin + a step (a = 0..n-1) that are nonzero
    at r: their indices a into idx[row], values into values[row] and r-derivatives into
    derivs[row] (a spline out of range gets index 0 and value 0). Only these four enter a sum
    over the basis, so the kernel's sums run over four terms, not n."""
    v = (r - origin) / step
    j = int(math.floor(v))
    t = v - j
    t2, t3 = t * t, t * t * t
    for p in range(4):
        a = j - p  # the spline of origin index a is on its piece p here
        if p == 0:
            val, der = t3 / 6.0, t2 / 2.0
        elif p == 1:
            val, der = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, (-3.0 * t2 + 2.0 * t + 1.0) / 2.0
        elif p == 2:
            val, der = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0, (3.0 * t2 - 4.0 * t) / 2.0
        else:
            val, der = (1.0 - t) ** 3 / 6.0, -(1.0 - t) ** 2 / 2.0
        if 0 <= a < n:
            idx[row, p], values[row, p], derivs[row, p] = a, val, der / step
        else:
            idx[row, p], values[row, p], derivs[row, p] = 0, 0.0, 0.0


@numba.njit(parallel=True, fastmath=True, cache=True)
def distilled_forward(x, box, nbr, valid, system, cutoff, pair_grid, pair_coef, prior, r3, radial_grid, tri_coef,
                      energy_bead, gpair):  # pragma: no cover
    """Energy per bead and dE/d r_ik per candidate slot of the distilled form, its heads already
    combined with the temperature weights of each bead's system.

    pair_grid (origin, step); pair_coef (B, n_pair): sum_k c_k(T) coef_k of the pair splines;
    prior (B, 3): (c0(T) s p / a, a, t); radial_grid (origin, step); tri_coef (B, L+1, m, m): the
    symmetric matrices S_L with g_L(r_a, r_c) = f(r_a)^T S_L f(r_c). energy_bead (M,) gets half of
    each pair term and the bead's triplets; gpair (M, K, 3) the gradient with respect to each
    r_ik = x_i - x_k (to be scattered by :func:`scatter_pairs`).

    Cost: each bead's neighbours c within r3 get S_L f(r_c) and S_L f'(r_c) once (four nonzero
    splines: 4 m products per L), so a triplet (a, c) costs three 4-term dot products per L
    instead of two m x m matrix-vector products (the same numbers, summed in another order).
    """
    m_beads, k_max = valid.shape
    n_pair = pair_coef.shape[1]
    n_l, n_m = tri_coef.shape[1], tri_coef.shape[2]
    n_chunks = (m_beads + _CHUNK - 1) // _CHUNK
    for chunk in numba.prange(n_chunks):
        geo = np.empty((4, k_max))
        near = np.empty(k_max, dtype=np.int64)
        pidx = np.empty((1, 4), dtype=np.int64)
        pval, pder = np.empty((1, 4)), np.empty((1, 4))
        fidx = np.empty((k_max, 4), dtype=np.int64)
        fval, fder = np.empty((k_max, 4)), np.empty((k_max, 4))
        sv = np.empty((k_max, n_l, n_m))  # S_L f(r_c)
        sw = np.empty((k_max, n_l, n_m))  # S_L f'(r_c)
        p = np.empty(n_l)
        dp = np.empty(n_l)
        for i in range(chunk * _CHUNK, min(m_beads, (chunk + 1) * _CHUNK)):
            b = system[i]
            e = 0.0
            n_near = 0
            for k in range(k_max):
                gpair[i, k, 0] = gpair[i, k, 1] = gpair[i, k, 2] = 0.0
                if not valid[i, k]:
                    continue
                dx, dy, dz, r = _pair(x, box, i, nbr[i, k])
                geo[0, k], geo[1, k], geo[2, k], geo[3, k] = dx, dy, dz, r
                if r >= cutoff:
                    continue
                _bspline4(r, pair_grid[0], pair_grid[1], n_pair, 0, pidx, pval, pder)
                phi = 0.0
                dphi = 0.0
                for s in range(4):
                    c = pair_coef[b, pidx[0, s]]
                    phi += c * pval[0, s]
                    dphi += c * pder[0, s]
                pr = prior[b, 0] * math.exp(-prior[b, 1] * (r - prior[b, 2]))
                phi += pr
                dphi -= prior[b, 1] * pr
                e += 0.5 * phi
                g = 0.5 * dphi / r
                gpair[i, k, 0] += g * dx
                gpair[i, k, 1] += g * dy
                gpair[i, k, 2] += g * dz
                if r < r3:
                    near[n_near] = k
                    _bspline4(r, radial_grid[0], radial_grid[1], n_m, n_near, fidx, fval, fder)
                    n_near += 1
            # S_L f(r_c) and S_L f'(r_c) of every neighbour within r3 (the second of the two below)
            for ic in range(1, n_near):
                for ell in range(n_l):
                    for mm in range(n_m):
                        v = w = 0.0
                        for s in range(4):
                            t = tri_coef[b, ell, mm, fidx[ic, s]]
                            v += t * fval[ic, s]
                            w += t * fder[ic, s]
                        sv[ic, ell, mm] = v
                        sw[ic, ell, mm] = w
            for ia in range(n_near):
                ka = near[ia]
                ra = geo[3, ka]
                for ic in range(ia + 1, n_near):
                    kc = near[ic]
                    rc = geo[3, kc]
                    cos = (geo[0, ka] * geo[0, kc] + geo[1, ka] * geo[1, kc] + geo[2, ka] * geo[2, kc]) / (ra * rc)
                    cos = min(1.0, max(-1.0, cos))
                    # Legendre P_L(cos) and P_L'(cos)
                    p[0], dp[0] = 1.0, 0.0
                    if n_l > 1:
                        p[1], dp[1] = cos, 1.0
                    for n in range(1, n_l - 1):
                        p[n + 1] = ((2 * n + 1) * cos * p[n] - n * p[n - 1]) / (n + 1)
                        dp[n + 1] = dp[n - 1] + (2 * n + 1) * p[n]
                    s_ = ds_da = ds_dc = ds_dcos = 0.0
                    for ell in range(n_l):
                        g_l = dga = dgc = 0.0  # f(r_a).S f(r_c), f'(r_a).S f(r_c), f(r_a).S f'(r_c)
                        for s in range(4):
                            mm = fidx[ia, s]
                            g_l += fval[ia, s] * sv[ic, ell, mm]
                            dga += fder[ia, s] * sv[ic, ell, mm]
                            dgc += fval[ia, s] * sw[ic, ell, mm]
                        s_ += g_l * p[ell]
                        ds_da += dga * p[ell]
                        ds_dc += dgc * p[ell]
                        ds_dcos += g_l * dp[ell]
                    e += s_
                    for c in range(3):
                        ua = geo[c, ka] / ra
                        uc = geo[c, kc] / rc
                        gpair[i, ka, c] += ds_da * ua + ds_dcos * (uc - cos * ua) / ra
                        gpair[i, kc, c] += ds_dc * uc + ds_dcos * (ua - cos * uc) / rc
            energy_bead[i] = e


#: free buffers the kernels' forward pass fills for the backward pass, by (shape, dtype): a
#: buffer belongs to a forward pass's autograd node and comes back here when the node is freed
#: (a backward pass may run more than once), so that MD does not allocate (and page-fault) a few
#: MB per step
_FREE_BUFFERS: dict = {}


def _take_buffer(shape, dtype) -> np.ndarray:
    free = _FREE_BUFFERS.get((shape, dtype))
    try:
        return free.pop()
    except (AttributeError, IndexError):
        return np.empty(shape, dtype=dtype)


def _give_back_buffer(buffer: np.ndarray) -> None:
    if buffer.size == 0:
        return
    key = (buffer.shape, buffer.dtype)
    if key not in _FREE_BUFFERS and len(_FREE_BUFFERS) >= 8:  # shapes of earlier lists or sizes: let go
        _FREE_BUFFERS.clear()
    free = _FREE_BUFFERS.setdefault(key, [])
    if len(free) < 4:
        free.append(buffer)


def _numpy(a, dtype) -> np.ndarray:
    """a tensor or array as a C-contiguous numpy array of ``dtype`` (no copy if it is one)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=dtype)


class PairEnvironment(torch.autograd.Function):
    """(env (G, M, C, NU), prior per bead (M,)) of positions x (M, 3) on the CPU, with the
    analytic backward. box (M, 3) each bead's box edges; nbr, valid (M, K) the candidates;
    inv_mu, sig2 (G, NU) tensors or arrays. With ``inter`` = (V (G, NU, O), vecscale (G, O) or
    None, quadscale (G, O) or None, cusp), the first output is instead the interaction layer's pair part y (G, M, O) of that env
    (:func:`_interact`; the same as :meth:`thermocg.models.fast.FastForceField._pair_interaction`).
    The kernels compute in x's dtype (float32 or float64)."""

    @staticmethod
    def forward(ctx, x, box, nbr, valid, inv_mu, sig2, prior, cutoff: float, channels: int, inter=None):
        xn = x.detach().contiguous().numpy()
        if xn.dtype not in PAIR_DTYPES:
            raise TypeError(f"the pair kernels run in float32 or float64, found positions of {xn.dtype}")
        nbr_n, valid_n = nbr.contiguous().numpy(), valid.contiguous().numpy()
        consts = (_numpy(inv_mu, xn.dtype), _numpy(sig2, xn.dtype), float(cutoff), int(channels),
                  np.asarray(prior, dtype=np.float64))
        g_n, nu_n = consts[0].shape
        m = xn.shape[0]
        if inter is None:
            kernel_inter = (np.zeros((0, 1, 1), xn.dtype), np.zeros((0, 1), xn.dtype), np.zeros((0, 1), xn.dtype),
                            xn.dtype.type(0.0))
            y_pair, outs = np.zeros((0, 0, 0), xn.dtype), np.zeros((0, 0, 0, 0), xn.dtype)
        else:
            v, vecscale, quadscale, cusp = inter
            v = _numpy(v, xn.dtype)
            zeros = np.zeros((g_n, v.shape[2]), xn.dtype)
            kernel_inter = (v, zeros if vecscale is None else _numpy(vecscale, xn.dtype),
                            zeros if quadscale is None else _numpy(quadscale, xn.dtype),
                            xn.dtype.type(cusp))  # of x's type: a float64 would promote the norms
            y_pair = np.empty((g_n, m, v.shape[2]), dtype=xn.dtype)
            outs = _take_buffer((g_n, m, channels, v.shape[2]), xn.dtype)
        env = np.empty((g_n, m, channels, nu_n), dtype=xn.dtype)
        prior_bead = np.empty(m, dtype=xn.dtype)
        pairs = _take_buffer((m, PAIR_ROWS, -(-valid_n.shape[1] // _LANES) * _LANES), xn.dtype)
        count = np.empty(m, dtype=np.int64)
        pair_forward(xn, box.detach().to(x.dtype).contiguous().numpy(), nbr_n, valid_n, *consts, kernel_inter, env,
                     prior_bead, pairs, count, y_pair, outs)
        ctx.nbr, ctx.valid, ctx.consts, ctx.pairs, ctx.count = nbr_n, valid_n, consts, pairs, count
        ctx.inter, ctx.env_shape, ctx.outs = kernel_inter, env.shape, outs
        for buffer in (pairs, outs):
            weakref.finalize(ctx, _give_back_buffer, buffer)
        return torch.from_numpy(env if inter is None else y_pair), torch.from_numpy(prior_bead)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_first, gprior):
        dtype, env_shape = ctx.pairs.dtype, ctx.env_shape
        g_n, m = env_shape[:2]
        fused = ctx.inter[0].shape[0] > 0
        first_shape = (g_n, m, ctx.inter[0].shape[2]) if fused else env_shape
        g_first = (np.zeros(first_shape, dtype=dtype) if g_first is None
                   else g_first.detach().contiguous().numpy().astype(dtype, copy=False))
        genv, gy = (np.zeros((0, 0, 0, 0), dtype), g_first) if fused else (g_first, np.zeros((0, 0, 0), dtype))
        gprior = (np.zeros(m, dtype=dtype) if gprior is None else gprior.detach().contiguous().numpy().astype(
            dtype, copy=False))
        gpair = np.empty((*ctx.valid.shape, 3), dtype=dtype)
        pair_backward(ctx.valid, *ctx.consts, ctx.inter, ctx.pairs, ctx.count, ctx.outs, genv, gy, gprior, gpair)
        grad = np.zeros((m, 3), dtype=dtype)
        scatter_pairs(ctx.nbr, ctx.valid, gpair, grad)
        return torch.from_numpy(grad), None, None, None, None, None, None, None, None, None
