"""``python -m lecture_lib.bench``: the decode benchmark's command line, kept at this short name
so that the README's commands work as written. The benchmark itself is ``lecture_lib.measure.bench``."""
from .measure.bench import main

if __name__ == "__main__":
    main()
