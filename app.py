"""Token Pruning Explorer web app (the Space's app_file); the code is explorer/app.py.

    python app.py                       # embedded toy model, http://127.0.0.1:7860
    python app.py --model llava-hf/llava-1.5-7b-hf --host 0.0.0.0 --threads 2
"""
import sys

from explorer.app import main

if __name__ == "__main__":
    sys.exit(main())
