"""The LMDB backend: the embedded default, one directory on the local file system.

``store`` holds the optimized layout's store and ``legacy`` the old design's, ``keys``
encodes the index keys, ``env`` opens the environment and runs transactions, ``meta``
and ``trust`` check a store before it is used, ``check`` verifies one, ``wakeup`` is the
servers' and children's local sockets. Nothing outside this package imports ``lmdb``.
"""
