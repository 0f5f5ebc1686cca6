"""One line for the visitor whatever went wrong: every handler raises `user_error(...) from None`."""
from __future__ import annotations

import logging

import gradio as gr

from ..engine import InputError, ModelLoadError
from ..methods import MethodError
from ..model_ref import NEUTRAL

log = logging.getLogger(__name__)
USER_ERRORS = (InputError, MethodError, ModelLoadError, ValueError)  # refused requests, not failures


def user_error(what: str, exc: Exception, private: bool = False) -> gr.Error:
    """The gr.Error to raise for `exc`: one line for the visitor; a log line for a refused request, a traceback
    only for a real failure.

    On a public page a model that does not load gets a plain sentence (its message may hold a server path)."""
    if isinstance(exc, gr.Error):
        log.info("%s refused: %s", what, exc.message)
        return exc
    if isinstance(exc, ModelLoadError) and str(exc) != NEUTRAL and not private:
        log.warning("%s: model did not load: %s", what, exc)
        return gr.Error("That model could not be loaded here; choose another from the model list.")
    if isinstance(exc, USER_ERRORS):
        log.info("%s refused: %s", what, exc)
        return gr.Error(str(exc).splitlines()[0] if str(exc).strip() else "The request was refused.")
    log.exception("%s failed", what)
    return gr.Error(f"The run failed ({type(exc).__name__}); the server log has the details.")
