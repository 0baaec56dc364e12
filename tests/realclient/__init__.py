"""A stand-alone checker of rportd against the real rport client; not a pytest suite."""

__test__ = False
