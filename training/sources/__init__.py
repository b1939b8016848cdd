"""Where the examples come from: one module per kind of source, all giving a `Source`.

* `idx`: Fashion-MNIST's original idx files (gzipped or not);
* `tfds`: TensorFlow Datasets builders, prepared or downloaded, with offline checks;
* `folder`: image folders in any format Pillow reads, checked first; unreadable images
  and non-image files counted apart in a `SkipReport`;
* `base`: what they share: `Split`, `Source`, `SkipReport` and the stratified hold-out.

`training.data` assembles the pipelines on top of them and is the public entry point.
"""
