# Production image for jitbot. Build: docker build -t jitbot .
# Run:   docker run -p 3000:3000 -e SLACK_BOT_TOKEN=... -e SLACK_SIGNING_SECRET=... \
#          -v $PWD/policy.yml:/etc/jitbot/policy.yml:ro -v jitbot-data:/data jitbot
# See docs/deployment.md.

# ---- build: resolve exactly what uv.lock pins, without dev dependencies ----
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Same uv version as the Makefile.
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first (cached until uv.lock or pyproject.toml change), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY bot ./bot
COPY connectors ./connectors
COPY storage ./storage
# --no-editable: the virtual environment holds a real install, so the runtime stage needs no sources.
RUN uv sync --frozen --no-dev --no-editable

# ---- runtime ----
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home jitbot \
 && mkdir -p /data /etc/jitbot \
 && chown jitbot:jitbot /data
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JITBOT_POLICY=/etc/jitbot/policy.yml \
    DATABASE_URL=sqlite+aiosqlite:////data/jitbot.db
USER jitbot
# The SQLite default lives on this volume; with PostgreSQL (DATABASE_URL) it stays empty.
VOLUME ["/data"]
EXPOSE 3000
CMD ["jitbot", "serve"]
