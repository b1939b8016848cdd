import sys

from training import quiet

quiet.quiet_tensorflow_startup()  # before training.cli imports TensorFlow

from training.cli import main  # noqa: E402

sys.exit(main())
