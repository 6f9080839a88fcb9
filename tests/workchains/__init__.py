"""WorkChains for the tests that must be importable by module path (checkpoints, resume).

A checkpoint names its process class by ``module:qualname`` and resume imports it again, so the
classes used by the crash-and-resume tests live here, not inside test functions.
"""
