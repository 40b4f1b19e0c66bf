"""``python -m bench``: see ``bench.cli``."""

if __name__ == "__main__":
    # Imported here, not at the top: spawned cell processes re-import this module as
    # __mp_main__ and must not load TensorFlow before redirecting their output.
    import os
    import sys

    # Before TensorFlow loads: keep its C++ start-up chatter out of the progress output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.cli import main

    sys.exit(main())
