"""duet_lib: the library behind the Sketch+Text Duet book.

The public API lives in submodules (``duet_lib.data``, ``duet_lib.models`` ...);
this file only carries the version.
"""

__version__ = "0.1.0"
