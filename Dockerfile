# Token Pruning Explorer web app for a GPU host or a Docker Space: port 7860, non-root uid 1000.
# Build: docker build -t token-pruning-explorer .   Run: docker run --gpus all -p 7860:7860 token-pruning-explorer
# (Written for Spaces/GPU hosts; no Docker engine on the development machine, so it is linted, not built.)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HOME=/home/user

RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# CUDA torch for a GPU host: the index URL selects the CUDA 12.8 build of the pinned version.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
COPY --chown=user:user requirements.txt requirements-app.txt ./
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0 \
 && pip install -r requirements.txt \
 && pip install -r requirements-app.txt

COPY --chown=user:user . .
USER 1000
EXPOSE 7860
# Hub models need the network: pass --model llava-hf/llava-1.5-7b-hf (or --online) via CMD override.
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
