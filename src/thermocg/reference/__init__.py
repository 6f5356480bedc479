"""All-atom reference data: OpenMM water at many temperatures, per-molecule energies.

Import the parts directly: ``thermocg.reference.stage.run_reference`` (the stage),
``thermocg.reference.decomposition`` (per-molecule energies of an Ewald sum),
``thermocg.reference.engine`` (the OpenMM boundary). This package does not import
OpenMM until one of those is imported.
"""
