"""Thermal-response regression targets (THEORY.md §2-3) and the exact oracle of §5.

``thermocg.targets.estimators``: per-sample targets whose conditional means are the
mean force's temperature derivatives. ``thermocg.targets.oracle``: the two-state
system with known F, F^(1), F^(2), for tests and for users who want to check an
estimator or a model.
"""
