# One image for every process of the stack (migrate, worker, beat, flower); the command picks the role.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir uv==0.13.8 && useradd --create-home --uid 1000 app
WORKDIR /srv
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY tasks ./tasks
COPY sql ./sql
RUN uv sync --frozen --no-dev
USER app
CMD ["python", "-m", "app", "--help"]
