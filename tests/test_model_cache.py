"""One model cache keyed by resolved identity, bounded (LRU, pinned models kept); the public allow-list."""
from __future__ import annotations

import os
import shutil

import pytest

from explorer.engine import Engine
from explorer.limits import Limits
from explorer.model_ref import EMBEDDED_MODEL, EMBEDDED_NAME, NEUTRAL, AllowList, ModelRef, public_name, resolve
from explorer.models import ModelLoadError


@pytest.fixture(scope="module")
def root(tmp_path_factory, checkpoints):
    """<root>/tiny and <root>/other: two distinct tiny LLaVA folders (copies of the session's)."""
    base = tmp_path_factory.mktemp("models")
    shutil.copytree(checkpoints["llava"], base / "tiny")
    shutil.copytree(base / "tiny", base / "other")
    return base


def test_eight_spellings_of_one_folder_load_one_model(root, monkeypatch):
    monkeypatch.chdir(root)
    monkeypatch.setenv("HOME", str(root))
    (root / "link").symlink_to(root / "tiny")
    spellings = [str(root / "tiny"), f"{root}/tiny/", f"{root}//tiny", "tiny", "./tiny", "tiny/./", "~/tiny",
                 "link", f"../{root.name}/tiny"]
    engine = Engine(threads=1)
    first = engine.model(spellings[0])
    assert all(engine.model(s) is first for s in spellings)
    assert engine.loaded_keys() == [(os.path.realpath(root / "tiny"), None)]
    assert first.model_id == os.path.realpath(root / "tiny")


def test_lru_evicts_and_pinned_models_stay(root):
    engine = Engine(threads=1, limits=Limits(max_models=1))
    tiny, other = str(root / "tiny"), str(root / "other")
    engine.model(tiny)
    engine.model(other)
    assert engine.loaded_keys() == [(other, None)], "a second distinct model evicts the first"
    engine.pin(tiny)
    engine.model(tiny)
    engine.model(other)
    assert engine.loaded_keys() == [(tiny, None), (other, None)], "the pinned model stays"


def test_resolve():
    assert resolve("llava-hf/llava-1.5-7b-hf") == ModelRef("llava-hf/llava-1.5-7b-hf")
    assert resolve(" Qwen/Qwen2-VL-2B-Instruct@v1.0 ").key == ("Qwen/Qwen2-VL-2B-Instruct", "v1.0")
    assert resolve(EMBEDDED_NAME).source == os.path.realpath(EMBEDDED_MODEL)
    for spec in ("/nowhere/model", "./missing", "missing", "a/b/c", "../x/y", "org/name/"):
        with pytest.raises(ModelLoadError, match="folder not found"):
            resolve(spec)


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
        resolve(str(tmp_path / "config.json"))


def test_public_allow_list_is_neutral_and_leaks_no_path(root, tmp_path):
    allow = AllowList.build(str(EMBEDDED_MODEL), ["llava-hf/llava-1.5-7b-hf"], [str(root / "tiny")])
    assert [value for _, value in allow.choices()] == [EMBEDDED_NAME, "llava-hf/llava-1.5-7b-hf", "local:tiny"]
    assert not any(str(root) in label or "/work" in label for label, _ in allow.choices())
    assert allow.spec("local:tiny") == str(root / "tiny") and allow.spec(EMBEDDED_NAME) == str(EMBEDDED_MODEL)
    messages = set()
    for name in (str(root / "other"), str(tmp_path / "missing"), "org/unknown", str(root / "tiny"), "../../etc"):
        with pytest.raises(ModelLoadError) as exc:
            allow.spec(name)
        messages.add(str(exc.value))
    assert messages == {NEUTRAL}, "existing and missing paths get the same sentence"


def test_two_allowed_folders_with_one_name_are_refused_at_start(tmp_path):
    for parent in ("a", "b"):
        (tmp_path / parent / "tiny").mkdir(parents=True)
    same = [str(tmp_path / "a" / "tiny"), str(tmp_path / "a" / "tiny") + "/"]
    assert AllowList.build(str(EMBEDDED_MODEL), [], same).spec("local:tiny") == same[0]  # one folder, two spellings
    with pytest.raises(ModelLoadError, match="share the public name 'local:tiny'"):
        AllowList.build(str(EMBEDDED_MODEL), [], [str(tmp_path / "a" / "tiny"), str(tmp_path / "b" / "tiny")])


def test_private_box_takes_free_form_ids(root):
    allow = AllowList.build(str(EMBEDDED_MODEL), [], free_form=True)
    assert allow.spec(str(root / "other")) == str(root / "other")
    assert allow.spec(EMBEDDED_NAME) == str(EMBEDDED_MODEL)


def test_public_names():
    assert public_name(str(EMBEDDED_MODEL) + "/") == EMBEDDED_NAME
    assert public_name("Qwen/Qwen2-VL-2B-Instruct") == "Qwen/Qwen2-VL-2B-Instruct"
