"""From the official ILSVRC2012 tarballs (or the demo's) to the prepared dataset on disk."""
