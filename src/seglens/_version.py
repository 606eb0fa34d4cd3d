"""The package version, in a leaf module: modules that show it import it from here, not from the
package (``from . import __version__`` would make every such module part of an import cycle)."""

__version__ = "0.1.0"
