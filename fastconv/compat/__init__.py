"""Import path of the CS231n-style layer functions, :mod:`fastconv.compat.cs231n`
(implemented in :mod:`fastconv.interop.cs231n`)."""
