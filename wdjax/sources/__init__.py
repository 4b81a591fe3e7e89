"""Where image data comes from; `wdjax.data` is the front door that picks one.

* `wdjax.sources.common` -- the :class:`Dataset` record and the one-line :class:`DataError`;
* `wdjax.sources.folder` -- image folders and ``.tar.gz``/``.tgz``/``.tar`` archives
  (scanning, layout, decoding, source checksums);
* `wdjax.sources.cache` -- the decoded-array cache of folder sources;
* `wdjax.sources.tfds` -- TensorFlow Datasets, with a quick download-host check.
"""
