"""The engine: loads and caches models, prepares one input, runs N methods on it, returns plain results."""
from __future__ import annotations

import gc
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from PIL import Image

from .images import normalise, open_image
from .limits import InputError, Limits, check_seed, whole
from .model_ref import EMBEDDED_MODEL, ModelRef, resolve
from .methods import Method, MethodError, NotApplicable, make
from .models import ImageLayout, LoadedModel, ModelLoadError, load_model
from .results import decode_answer, method_result, not_applicable_result, timing_entry, token_texts
from .resize_input import resizes, run_resized
from .settings import SETTINGS
from .runtime.decode import greedy
from .runtime.pruner import Pruner
from .runtime.shared import Runs, run_methods
from .runtime.decode_probe import DecodeProbe, key_positions


__all__ = ["EMBEDDED_MODEL", "Engine", "InputError", "Limits", "ModelRef", "Prepared", "default_model_id",
           "open_image"]

@dataclass
class Prepared:
    """One input, processed once and shared by every method."""

    images: list[Image.Image]
    sizes: list[tuple[int, int]]  # (width, height) of each upload
    prompt: str
    inputs: dict
    layouts: list[ImageLayout]

    @property
    def prompt_len(self) -> int:
        return self.inputs["input_ids"].shape[1]


def default_model_id() -> str:
    if (EMBEDDED_MODEL / "config.json").exists():
        return str(EMBEDDED_MODEL)
    raise ModelLoadError("The embedded model is not in assets/toy-llava yet; pass --model with a model id or folder.")


class Engine:
    def __init__(self, device: str | None = None, threads: int | None = None, limits: Limits | None = None,
                 solo: bool = False):
        """`solo`: compare runs every method alone, from the model's input (timing "solo", Table 5 style);
        by default methods share the vision tower and the decoder layers below their cut (timing "shared-prefix")."""
        self.device = device
        self.solo = solo
        self.limits = limits or Limits.from_env()
        if threads:
            torch.set_num_threads(threads)
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()  # by resolved identity, least recent first
        self._pinned: set[tuple] = {ModelRef(os.path.realpath(EMBEDDED_MODEL)).key}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.work_lock = threading.RLock()  # model runs one at a time: hooks and caches live on the model
        self._warm: set[tuple] = set()

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def model(self, model_id: str | None = None) -> LoadedModel:
        """The model a spec names, loaded once per resolved identity; least recently used ones are evicted
        beyond `limits.max_models` (pinned models, the embedded one included, are never evicted)."""
        ref = resolve(model_id or default_model_id())
        with self._lock:
            if ref.key in self._models:
                self._models.move_to_end(ref.key)
                return self._models[ref.key]
        with self._load_lock:  # one load at a time (memory); look-ups of loaded models do not wait for it
            with self._lock:
                if ref.key in self._models:
                    return self._models[ref.key]
            loaded = load_model(ref.source, device=self.device, revision=ref.revision)
            loaded.model_id = ref.name
            with self._lock:
                self._models[ref.key] = loaded
                self._evict()
            return loaded

    def pin(self, model_id: str) -> None:
        """Keep this model loaded whatever else is asked for (the app's default model)."""
        self._pinned.add(resolve(model_id).key)

    def _evict(self) -> None:
        unpinned = [k for k in self._models if k not in self._pinned]
        for key in unpinned[: max(0, len(unpinned) - self.limits.max_models)]:
            name = self._models.pop(key).model_id
            self._warm = {w for w in self._warm if w[0] != name}
        if len(unpinned) > self.limits.max_models:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def loaded_keys(self) -> list[tuple]:
        """Identities of the models now in memory, least recently used first."""
        return list(self._models)

    def prepare(self, loaded: LoadedModel, images: list[Image.Image], prompt: str) -> Prepared:
        prompt = self.check_prompt(prompt)
        images = [normalise(img, self.limits) for img in self.check_images(images)]
        messages = [{"role": "user", "content": [*({"type": "image"} for _ in images),
                                                 {"type": "text", "text": prompt.strip()}]}]
        text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = loaded.processor(images=images, text=text, return_tensors="pt")
        inputs = {k: v.to(loaded.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
        sizes = [img.size for img in images]
        layouts = loaded.family.layouts(loaded.model, inputs, sizes)
        return Prepared(images, sizes, prompt.strip(), inputs, layouts)

    def check_prompt(self, prompt) -> str:
        """The stripped prompt: non-empty text of at most `limits.max_prompt_chars` characters."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("The prompt is empty: type a question about the image.")
        if len(prompt.strip()) > self.limits.max_prompt_chars:
            raise InputError(f"The prompt is too long ({len(prompt.strip())} characters); the limit is "
                             f"{self.limits.max_prompt_chars}.")
        return prompt.strip()

    def check_images(self, images) -> list:
        """One to `limits.max_images` images."""
        images = list(images or [])
        if not images:
            raise InputError("No image given: add at least one image.")
        if len(images) > self.limits.max_images:
            raise InputError(f"At most {self.limits.max_images} images per request, got {len(images)}.")
        return images

    def check_request(self, images, prompt, methods: list[Method], max_new_tokens, repeats=1) -> list[Method]:
        """Every bound of one compare request, before any model work; returns the distinct methods."""
        self.check_prompt(prompt)
        self.check_images(images)
        distinct = list(dict.fromkeys(methods))
        if not distinct:
            raise InputError("Choose at least one method.")
        if len(distinct) > self.limits.max_methods:
            raise InputError(f"At most {self.limits.max_methods} methods per request, got {len(distinct)}.")
        for method in distinct:
            check_seed(method, self.limits.max_seed)
        whole(max_new_tokens, "Max new tokens", 1, self.limits.max_new_tokens)
        whole(repeats, "Repeats", 1, self.limits.max_repeats)
        return distinct

    @staticmethod
    def not_applicable(loaded: LoadedModel, method: Method) -> str | None:
        """One sentence saying why `method` cannot run on this model, or None; no model work."""
        reasons = [r for r in (loaded.family.lacks(need) for need in method.requires) if r]
        return f"{method.label} does not apply to this model: {', and '.join(reasons)}." if reasons else None

    @staticmethod
    def fitted(loaded: LoadedModel, method: Method) -> Method:
        """`method` as this model runs it: a method with its own cut layers loses those past the model's depth
        (a new object, reported in the result's config; the user's object is never changed)."""
        return method.for_depth(len(loaded.family.lm_layers(loaded.model)))

    def check(self, loaded: LoadedModel, prepared: Prepared, method: Method) -> None:
        """Raise InputError for a budget, layer or seed this input cannot honour (NotApplicable for a method
        this model cannot run)."""
        reason = self.not_applicable(loaded, method)
        if reason:
            raise NotApplicable(reason)
        check_seed(method)  # sweeps derive per-doc seeds beyond the visitor's range; torch's is the bound here
        n_layers = len(loaded.family.lm_layers(loaded.model))
        if method.layer >= n_layers:
            raise InputError(f"Layer K={method.layer} is out of range: the model has {n_layers} layers (0-{n_layers - 1}).")
        for img in prepared.layouts:
            try:
                method.budget(img.count)
            except MethodError as exc:
                raise InputError(f"{method.name}: {exc}") from None

    def run(self, loaded: LoadedModel, prepared: Prepared, method: Method,
            max_new_tokens: int = SETTINGS.max_new_tokens, repeats: int = 1) -> dict:
        """Run one method on a prepared input; `repeats` > 1 gives median timings."""
        self.check(loaded, prepared, method)
        with self.work_lock:
            return self._run(loaded, prepared, self.fitted(loaded, method), max_new_tokens, repeats)

    def _run(self, loaded, prepared, method, max_new_tokens, repeats) -> dict:
        if resizes(loaded, method):  # downsample on Qwen2-VL: a smaller input image, run unpruned
            return run_resized(self, loaded, prepared, method, max_new_tokens, repeats)
        runs = run_methods(loaded.family, loaded.model, prepared.inputs, prepared.layouts, [method], max_new_tokens,
                           eos_ids(loaded), repeats, solo=True)[method]
        if runs.error is not None:
            raise runs.error
        return self._result(loaded, prepared, method, runs)

    def _result(self, loaded, prepared, method: Method, runs: Runs) -> dict:
        ids = runs.decoded[0].tokens
        return method_result(method, loaded, prepared, runs.decoded, runs.plans[-1], runs.scoring, runs.total,
                             self.threads, timing_entry(runs.timing, runs.shared_below),
                             answer=(decode_answer(loaded, ids), token_texts(loaded, ids)))

    def run_many(self, loaded: LoadedModel, prepared: Prepared, methods: list[Method],
                 max_new_tokens: int = SETTINGS.max_new_tokens, repeats: int = 1,
                 solo: bool | None = None) -> dict[Method, dict | InputError | MethodError]:
        """Every method on one prepared input as one compare (the vision tower and the layers below each cut run
        once unless `solo`; default: the engine's option): each method's result, or the error that refused it
        (InputError, NotApplicable or MethodError), which leaves the others running. No warm-up run here."""
        outcome, fitted = {}, {}
        for method in dict.fromkeys(methods):
            try:
                self.check(loaded, prepared, method)
                fitted[method] = self.fitted(loaded, method)
            except (InputError, MethodError) as exc:
                outcome[method] = exc
        with self.work_lock:
            ran = self._run_fitted(loaded, prepared, list(dict.fromkeys(fitted.values())), max_new_tokens, repeats,
                                   self.solo if solo is None else solo)
        return {m: outcome[m] if m in outcome else ran[fitted[m]] for m in dict.fromkeys(methods)}

    def _run_fitted(self, loaded, prepared, methods: list[Method], max_new_tokens, repeats, solo, progress=None,
                    total=None) -> dict[Method, dict | MethodError]:
        """Checked, fitted, distinct methods on one input: shared (unless `solo`) where the input is the model's;
        downsample's re-processed input alone. `progress(i, total, name)` before each method (`total`: the
        caller's count, methods it skipped included)."""
        methods = list(dict.fromkeys(methods))  # fitting may make two requested methods one
        total = total or len(methods)
        step = (lambda i, m: progress(i, total, m.name)) if progress else None
        together = [m for m in methods if not resizes(loaded, m)]
        shared = run_methods(loaded.family, loaded.model, prepared.inputs, prepared.layouts, together,
                             max_new_tokens, eos_ids(loaded), repeats, solo=solo, on_method=step)
        done = {m: runs.error if runs.error is not None else self._result(loaded, prepared, m, runs)
                for m, runs in shared.items()}
        for method in [m for m in methods if m not in done]:
            if progress:
                progress(total - len(methods) + len(done), total, method.name)
            try:  # its own input (downsample's re-processed image), run alone
                done[method] = self._run(loaded, prepared, method, max_new_tokens, repeats)
            except MethodError as exc:  # found only on the way in (downsample's re-processed input)
                done[method] = exc
        return done

    def compare(self, images, prompt: str, methods: list[Method], model_id: str | None = None,
                max_new_tokens: int = SETTINGS.max_new_tokens, repeats: int = SETTINGS.repeats,
                names: list[str] | None = None, progress=None, solo: bool | None = None) -> dict:
        """Every distinct method on the same input; the CLI's --json schema. Methods share the vision tower and
        the layers below their cut unless `solo` (default: the engine's `solo` option)."""
        methods = self.check_request(images, prompt, methods, max_new_tokens, repeats)
        solo = self.solo if solo is None else solo
        loaded = self.model(model_id)
        prepared = self.prepare(loaded, images, prompt)
        methods = [self.fitted(loaded, m) for m in methods]
        skip = {m: self.not_applicable(loaded, m) for m in methods}  # decided before any model work
        for method in methods:
            if not skip[method]:
                self.check(loaded, prepared, method)
        with self.work_lock:
            warm_key = (loaded.model_id, prepared.prompt_len)
            # first input of this shape (and a method that runs): one untimed prefill (allocator, kernels)
            if warm_key not in self._warm and not all(skip.values()):
                greedy(loaded.model, loaded.family, prepared.inputs, 1, set())
                self._warm.add(warm_key)
            done = {m: not_applicable_result(m, skip[m]) for m in methods if skip[m]}
            ran = self._run_fitted(loaded, prepared, [m for m in methods if not skip[m]], max_new_tokens, repeats,
                                   solo, progress, len(methods))
            for method, result in ran.items():  # a method refused on this input leaves the others' results
                failed = isinstance(result, MethodError)
                done[method] = not_applicable_result(method, str(result)) if failed else result
        return {"model": loaded.model_id, "revision": loaded.revision, "cached": False,
                "prompt": prepared.prompt, "images": image_summaries(prepared, names),
                "results": [done[m] for m in methods]}

    def answer_attention(self, images, prompt: str, method: Method, layer: int, step: int,
                         model_id: str | None = None, forced: list[int] | None = None,
                         beside_vanilla: bool = False) -> dict:
        """What the decode step producing answer token `step` attended to at decoder `layer` (heads averaged),
        over each image's tokens (image index), normalised to sum to 1 over all image tokens; one more run of
        `method` with a decode probe. `forced` feeds given answer token ids (e.g. another method's answer).
        `beside_vanilla`: also vanilla producing the same tokens, under "vanilla" (one request, one preparation)."""
        loaded = self.model(model_id)
        prepared = self.prepare(loaded, images, prompt)
        self.check(loaded, prepared, method)
        method = self.fitted(loaded, method)
        if resizes(loaded, method):
            raise InputError(f"{method.label} changes the input image on this model; its attention is not shown.")
        n_layers = len(loaded.family.lm_layers(loaded.model))
        layer = whole(layer, "The attention layer", 0, n_layers - 1)
        step = whole(step, "The answer token", 0, (len(forced) if forced else self.limits.max_new_tokens) - 1)
        with self.work_lock:
            mine = self._attention_row(loaded, prepared, method, layer, step, forced)
            if beside_vanilla:
                mine["vanilla"] = dict(mine) if method.name == "vanilla" else self._attention_row(
                    loaded, prepared, make("vanilla"), layer, step, mine["token_ids"])
        return mine

    def _attention_row(self, loaded, prepared: Prepared, method: Method, layer: int, step: int,
                       forced: list[int] | None) -> dict:
        attention = loaded.family.lm_layers(loaded.model)[layer].self_attn
        with Pruner(loaded.family, loaded.model, method, prepared.layouts, prepared.prompt_len) as pruner, \
                DecodeProbe(attention, loaded.family.apply_rotary, layer) as probe:
            decoded = greedy(loaded.model, loaded.family, prepared.inputs, step + 1, eos_ids(loaded),
                             forced=forced[:step + 1] if forced else None)
        if step >= len(decoded.tokens):
            n = len(decoded.tokens)
            raise InputError(f"The answer has {n} tokens; choose one of 0-{n - 1}.")
        row = probe.rows[step].float().cpu()  # (L_keys,) prompt keys first, then earlier answer tokens
        keys = key_positions(pruner, layer, prepared.prompt_len, decoding=step > 0)  # (L_prompt_keys,)
        per_image, share = [], 0.0
        for img in prepared.layouts:
            inside = (keys >= img.start) & (keys < img.start + img.count)
            values = torch.zeros(img.count)  # (n,) image index; pruned tokens hold nothing
            values[keys[inside] - img.start] = row[:len(keys)][inside]
            per_image.append(values)
            share += float(values.sum())
        return {"layer": layer, "step": step, "token_ids": decoded.tokens,
                "tokens": token_texts(loaded, decoded.tokens), "image_share": round(share, 6),
                "images": [[round(float(v) / share, 6) if share else 0.0 for v in values] for values in per_image]}


def image_summaries(prepared: Prepared, names: list[str] | None) -> list[dict]:
    return [{"path": (names[i] if names and i < len(names) else None), "width": w, "height": h,
             "grid": list(img.grid), "tokens": img.count,
             "frame": list(img.segments[0].frame)}
            for i, ((w, h), img) in enumerate(zip(prepared.sizes, prepared.layouts))]


def eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    tok = getattr(loaded.processor, "tokenizer", None)
    if tok is not None and tok.eos_token_id is not None:
        eos.append(tok.eos_token_id)
    return {int(e) for e in eos if e is not None}
