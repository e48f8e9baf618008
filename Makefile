# The commands of the README. Each one works on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Local use: a secret key generated under var/. Production sets DEBUG=false and SECRET_KEY.
export DEBUG ?= true
export ASU_HOST ?= 127.0.0.1
export ASU_PORT ?= 8000
DEMO_DIR := $(CURDIR)/var/demo

.PHONY: venv run demo test lint bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# Migrate, read the catalogue, then web server, Celery worker and beat in the foreground.
# An unreachable upstream is reported; the server still starts on the last good catalogue.
run: venv
	$(BIN)/python manage.py migrate --no-input
	-$(BIN)/python manage.py sync_upstream
	exec $(BIN)/honcho start

# The same, offline, against the small mirror the tests use.
demo: venv
	$(BIN)/python tests/fixtures/mirror.py $(DEMO_DIR)/mirror
	ASU_VAR_DIR=$(DEMO_DIR) ASU_UPSTREAM_URL=file://$(DEMO_DIR)/mirror \
		ASU_UPSTREAM_KEYS=$(CURDIR)/tests/fixtures/keys/trusted $(MAKE) run

test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache .ruff_cache
