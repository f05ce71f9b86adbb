# faceaudit service image: serves an index mounted at /index (photos at /photos) and keeps
# removal requests and the search audit log in the /state volume.
#   docker build -t faceaudit .                             # CPU
#   docker build -t faceaudit:gpu --build-arg DEVICE=gpu .  # CUDA (needs the NVIDIA runtime)
#   docker run -p 8000:8000 -v $PWD/index:/index:ro -v $PWD/photos:/photos:ro \
#       -v faceaudit-state:/state faceaudit
# No step names a package folder: the dependencies are read from pyproject.toml, and the
# source is copied whole (less what .dockerignore leaves out). tests/test_dockerfile.py runs
# the COPY and RUN steps below in a scratch folder.
FROM python:3.11-slim
ARG DEVICE=cpu

# System set-up: OpenCV's libraries, the non-root user, and its state folder.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 faceaudit \
    && install -d -o faceaudit -g faceaudit -m 0700 /state

# Dependencies first, as pyproject.toml lists them: this layer is rebuilt only when it changes.
# The GPU variant swaps onnxruntime for onnxruntime-gpu (both install the same module).
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; \
        project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
        print("\n".join(project["dependencies"]))' > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt \
    && if [ "$DEVICE" = "gpu" ]; then \
         pip uninstall -y onnxruntime && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]"; \
       fi

# Then the whole source: faceaudit and every package pyproject.toml maps, whatever they are.
COPY . .
RUN pip install --no-cache-dir --no-deps .

# The service runs elsewhere than the source, so that only the installed package is imported.
WORKDIR /app
USER faceaudit
ENV FACEAUDIT_DEVICE=auto FACEAUDIT_STATE_DIR=/state
VOLUME /state
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["faceaudit", "serve", "--index", "/index", "--dataset", "/photos", "--host", "0.0.0.0"]
