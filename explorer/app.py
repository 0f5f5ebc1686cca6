"""The web app's entry point (`python app.py`): arguments -> engine -> build_demo(engine) -> launch, with the
process policy a server needs (analytics off, offline unless a hub model is asked for, malloc arenas, logging).

    python app.py                       # embedded toy model, http://127.0.0.1:7860
    python app.py --model llava-hf/llava-1.5-7b-hf --host 0.0.0.0
"""
from __future__ import annotations

import logging
import os
import sys

from .settings import OneLineParser, add_arguments, settings_from


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every busy thread its own malloc arena; with dozens of request threads the server's memory
    then grows by ~15 % under load and stays there. Two arenas keep it flat (benchmarks/load.py: +7.6 % after the
    first 100 requests, ~1 % per 100 after). $MALLOC_ARENA_MAX, when set, wins; no-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python app.py", description="Token Pruning Explorer web app")
    parser.add_argument("--model", default=os.environ.get("EXPLORER_MODEL"),
                        help="default model: hub id or folder (default: $EXPLORER_MODEL, else the embedded model)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    add_arguments(parser, ("threads", "device"))
    parser.add_argument("--cache-dir", default=None, help="results cache directory (private, 0700)")
    parser.add_argument("--no-cache", action="store_true", help="do not cache results on disk")
    parser.add_argument("--allow-model", action="append", default=[], metavar="FOLDER_OR_HUB_ID",
                        help="also offer this folder or hub id in the model list (repeatable; also $EXPLORER_MODELS, "
                        "comma-separated)")
    parser.add_argument("--any-model", action="store_true", default=os.environ.get("EXPLORER_ANY_MODEL") == "1",
                        help="private box: let visitors load any hub id or server folder by name "
                        "(also $EXPLORER_ANY_MODEL=1); by default only the listed models load")
    parser.add_argument("--online", action="store_true", help="allow hub downloads (default: only on a Space "
                        "or when --model names a hub id)")
    return parser


def server_policy(args) -> None:
    """Process-wide settings for a server: analytics off, malloc arenas, log format, offline unless asked."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    limit_malloc_arenas()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per refused request, not per HTTP call
    hub_model = args.model and not os.path.exists(args.model)
    if not (args.online or hub_model or os.environ.get("SPACE_ID") or os.environ.get("HF_HUB_OFFLINE")):
        os.environ["HF_HUB_OFFLINE"] = "1"  # offline: no network calls at all


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server_policy(args)
    from .engine import Engine, InputError, ModelLoadError, default_model_id
    from .model_ref import resolve
    from .ui import build_demo, launch_kwargs
    from .ui.cache import DEFAULT_DIR, ResultCache
    from .ui.layout import allow_list

    folders = [*args.allow_model, *filter(None, os.environ.get("EXPLORER_MODELS", "").split(","))]
    try:
        settings = settings_from(args)
        model_id = args.model or default_model_id()
        for spec in (model_id, *folders):
            resolve(spec)  # "folder not found" now, not on a visitor's first request
        models = allow_list(model_id, folders, free_form=args.any_model)
        engine = Engine(device=settings.device, threads=settings.threads)
    except (ModelLoadError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = ResultCache(None if args.no_cache else (args.cache_dir or DEFAULT_DIR))
    demo = build_demo(engine, model_id, cache, models)
    demo.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port,
                                                   **launch_kwargs())
    return 0
