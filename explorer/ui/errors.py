"""One line for the visitor whatever went wrong: every handler ends in `raise_user_error(...)`."""
from __future__ import annotations

import logging
from typing import NoReturn

import gradio as gr

from ..engine import InputError, ModelLoadError
from ..methods import MethodError
from ..model_ref import NEUTRAL

log = logging.getLogger(__name__)
USER_ERRORS = (InputError, MethodError, ModelLoadError, ValueError)  # refused requests, not failures


def raise_user_error(what: str, exc: Exception, private: bool = False) -> NoReturn:
    """Raise the gr.Error for `exc` (its cause hidden): one line for the visitor; a log line for a refused
    request, a traceback only for a real failure.

    On a public page a model that does not load gets a plain sentence (its message may hold a server path)."""
    if isinstance(exc, gr.Error):
        log.info("%s refused: %s", what, exc.message)
        raise exc from None
    if isinstance(exc, ModelLoadError) and str(exc) != NEUTRAL and not private:
        log.warning("%s: model did not load: %s", what, exc)
        raise gr.Error("That model could not be loaded here; choose another from the model list.") from None
    if isinstance(exc, USER_ERRORS):
        log.info("%s refused: %s", what, exc)
        raise gr.Error(str(exc).splitlines()[0] if str(exc).strip() else "The request was refused.") from None
    log.exception("%s failed", what)
    raise gr.Error(f"The run failed ({type(exc).__name__}); the server log has the details.") from None
