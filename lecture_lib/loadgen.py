"""``python -m lecture_lib.loadgen``: the load generator (``lecture_lib.serving.loadgen``)."""
from lecture_lib.serving.loadgen import main

if __name__ == "__main__":
    main()
