# faceaudit service image: serves an index mounted at /index (photos at /photos).
#   docker build -t faceaudit .                          # CPU
#   docker build -t faceaudit:gpu --build-arg DEVICE=gpu .  # CUDA (needs the NVIDIA runtime)
#   docker run -p 8000:8000 -v $PWD/index:/index:ro -v $PWD/photos:/photos:ro faceaudit
# The install steps are the README's; only the GPU variant swaps onnxruntime for onnxruntime-gpu.
FROM python:3.11-slim
ARG DEVICE=cpu

RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 faceaudit
WORKDIR /app

# Dependencies first (cached), then the source.
COPY pyproject.toml README.md ./
RUN mkdir -p faceaudit models indexer service && touch faceaudit/__init__.py \
    models/__init__.py indexer/__init__.py service/__init__.py \
    && pip install --no-cache-dir . && pip uninstall -y faceaudit \
    && if [ "$DEVICE" = "gpu" ]; then \
         pip uninstall -y onnxruntime && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]"; \
       fi
COPY faceaudit faceaudit
COPY models models
COPY indexer indexer
COPY service service
RUN pip install --no-cache-dir --no-deps .

USER faceaudit
ENV FACEAUDIT_DEVICE=auto
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["faceaudit", "serve", "--index", "/index", "--dataset", "/photos", "--host", "0.0.0.0"]
