# Orion: one image for web, worker, beat, Flower and the SMTP sink (docker-compose.yml
# picks the command; `orion` is on the PATH for the operator commands). Python deps from requirements.txt (pinned), the dashboards'
# Socket.IO client from package-lock.json (npm ci at build time, served locally).
# The folders compose mounts volumes on exist here, owned by the user the
# processes run as, so a fresh named volume takes that owner.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    ORION_MODE=services ORION_DATA_DIR=/var/lib/orion WEB_HOST=0.0.0.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 orion \
 && mkdir -p /var/lib/orion/metrics /var/lib/orion/beat /var/lib/orion/mail \
 && chown -R orion /var/lib/orion

WORKDIR /app
COPY requirements.txt package.json package-lock.json ./
RUN pip install --no-cache-dir -r requirements.txt && npm ci --no-audit --no-fund --omit=dev
COPY . .
# The orion command line (pyproject.toml), editable so it runs the code in /app.
RUN pip install --no-cache-dir --no-deps -e .

USER orion
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["python", "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "1100", \
     "--worker-connections", "1200", "-b", "0.0.0.0:8000", "--access-logfile", "-", "web:create_app()"]
