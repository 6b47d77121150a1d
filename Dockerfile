# Homeward API image: embedded SQLite + FAISS by default, PostgreSQL via HOMEWARD_DATABASE_URL,
# rate limits shared through Redis via HOMEWARD_REDIS_URL, Milvus via HOMEWARD_INDEX_BACKEND.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + extras['postgres'] + extras['redis'] + extras['milvus']))" \
 > requirements.txt \
 && pip install -r requirements.txt
COPY README.md ./
COPY service ./service
RUN pip install --no-deps .
COPY scripts/fetch_models.py ./scripts/
RUN python scripts/fetch_models.py --model-dir /opt/models

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /app homeward \
 && mkdir /data && chown homeward /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /app/models
ENV PATH=/opt/venv/bin:$PATH \
    HOMEWARD_MODEL_DIR=/app/models \
    HOMEWARD_DATA_DIR=/data
WORKDIR /app
USER homeward
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["homeward", "serve", "--host", "0.0.0.0", "--port", "8000"]
