"""``python -m lecture_lib.serve``: the OpenAI-compatible server (``lecture_lib.serving.server``)."""
from lecture_lib.serving.server import main

if __name__ == "__main__":
    main()
