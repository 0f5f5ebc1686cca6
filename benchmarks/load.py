"""Load test: N concurrent clients x M Compare requests on loopback against a started app server.

    python benchmarks/load.py [--clients 20 --requests 5 --prompts 5 --methods vanilla,fastv]
    python benchmarks/load.py --url http://127.0.0.1:7860 [--pid SERVER_PID]

Without --url it starts `app.py` (the embedded model, or --model; private results cache in a temp folder) on a
free port and stops it afterwards. Requests cycle through --prompts distinct prompts, so the first of each runs
the model and the rest come from the results cache. Prints failures, p50/p95 latency, the latency of cached
requests while a long model run is in progress, and the server's RSS before/after (when its pid is known).
Targets (issue 12): 0 failures, RSS growth < 10 %, cached requests < 0.5 s while the model is busy.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "assets" / "examples" / "toy_colour_5.png"


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and its children, MB (Linux /proc); None when unknown."""
    if not pid:
        return None
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def start_server(args) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--cache-dir", tempfile.mkdtemp()]
    cmd += ["--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return url, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start within 600 s")


def connect(url: str):
    """A gradio_client; it fetches the app's config once (not request latency), so clients are made up front."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": 600})


def compare(client, prompt: str, methods: list[str], max_new_tokens: int = 8,
            more_images: int = 0) -> tuple[float, bool, str]:
    """(seconds, served from the cache, error text or '') for one Compare request."""
    from gradio_client import handle_file

    started = time.perf_counter()
    try:
        payload, _ = client.predict(image=handle_file(str(IMAGE)), prompt=prompt, methods=methods, keep=64,
                                    max_new_tokens=max_new_tokens, api_name="/compare",
                                    more_images=[handle_file(str(IMAGE))] * more_images)
        return time.perf_counter() - started, bool(payload["cached"]), ""
    except Exception as exc:  # noqa: BLE001 - counted and printed as a failure
        return time.perf_counter() - started, False, f"{type(exc).__name__}: {str(exc)[:120]}"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def cached_while_busy(url: str, methods: list[str], probes: int) -> list[float]:
    """Start one long uncached run, then time cached requests while it is in progress."""
    probe, other = connect(url), connect(url)
    compare(probe, "what colour is the circle ?", methods)  # cached from now on
    busy = threading.Thread(target=compare, args=(other, f"a long question {time.time()} ?", _all_methods(), 48, 3))
    busy.start()
    time.sleep(1.0)  # let the long run reach the model
    times = []
    while busy.is_alive() and len(times) < probes:
        seconds, cached, error = compare(probe, "what colour is the circle ?", methods)
        if cached and not error:
            times.append(seconds)
    busy.join()
    return times


def _all_methods() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from explorer.methods import REGISTRY

    return list(REGISTRY)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already started server (default: start app.py here)")
    parser.add_argument("--pid", type=int, help="the server's pid, for RSS (known when this script starts it)")
    parser.add_argument("--model", help="model for the started server (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the started server")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--prompts", type=int, default=5, help="distinct prompts (the rest are cache hits)")
    parser.add_argument("--methods", default="vanilla,fastv")
    parser.add_argument("--probes", type=int, default=10, help="cached requests timed while the model is busy")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the load (RSS after each: growth or plateau)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    proc = None
    url, pid = args.url, args.pid
    if not url:
        url, proc = start_server(args)
        pid = proc.pid
    try:
        rss_start = rss_mb(pid)
        clients = [connect(url) for _ in range(args.clients)]
        compare(clients[0], "what is in the picture ? warm-up", methods)  # model loaded, kernels warm
        rss_before = rss_mb(pid)

        def one_client(c: int) -> list:
            return [compare(clients[c], f"what is in the picture ? {(c + j) % args.prompts}", methods)
                    for j in range(args.requests)]

        rss_after, results = [], []
        started = time.perf_counter()
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.clients) as pool:
                results += [r for rs in pool.map(one_client, range(args.clients)) for r in rs]
            rss_after.append(rss_mb(pid))
        wall = time.perf_counter() - started
        busy = cached_while_busy(url, methods, args.probes)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
    report(args, results, wall, busy, rss_start, rss_before, rss_after)
    return 0


def report(args, results, wall, busy, rss_start, rss_before, rss_after) -> None:
    failures = [e for _, _, e in results if e]
    times = [s for s, _, e in results if not e]
    cached = [s for s, c, e in results if c and not e]
    print(f"{args.rounds} round(s) of {args.clients} clients x {args.requests} requests = {len(results)} in {wall:.1f} s; "
          f"failures: {len(failures)}")
    for error in sorted(set(failures))[:10]:
        print(f"  failure: {error}")
    print(f"latency p50 {percentile(times, 0.5):.2f} s, p95 {percentile(times, 0.95):.2f} s "
          f"({len(cached)} served from the cache, p50 {percentile(cached, 0.5):.2f} s)")
    if busy:
        print(f"cached requests while a model run is in progress: {len(busy)}, p50 {percentile(busy, 0.5):.2f} s, "
              f"max {max(busy):.2f} s")
    else:
        print("cached requests while a model run is in progress: none measured (the long run ended first)")
    growth = None
    if rss_before and rss_after and rss_after[0]:
        growth = 100 * (rss_after[0] - rss_before) / rss_before
        later = "".join(f", {r:.0f} MB after round {i + 2}" for i, r in enumerate(rss_after[1:]))
        print(f"server RSS: {rss_start:.0f} MB at start, {rss_before:.0f} MB after warm-up, {rss_after[0]:.0f} MB "
              f"after the load ({growth:+.1f} %){later}")
    met = not failures and (growth is None or growth < 10) and bool(busy) and max(busy) < 0.5
    print("targets (0 failures, RSS growth < 10 %, cached < 0.5 s while busy):", "met" if met else "MISSED")


if __name__ == "__main__":
    sys.exit(main())
