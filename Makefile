# The commands of the README. Each one works on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# DEBUG stays off unless asked for (`DEBUG=true make run`). Without SECRET_KEY, the key is
# one generated once in var/secret_key.
ifeq ($(origin SECRET_KEY)$(origin SECRET_KEY_FILE),undefinedundefined)
export SECRET_KEY_FILE := $(CURDIR)/var/secret_key
endif
KEY := $(if $(filter $(CURDIR)/var/secret_key,$(SECRET_KEY_FILE)),$(SECRET_KEY_FILE))
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

$(CURDIR)/var/secret_key:
	mkdir -p $(@D)
	umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

# Migrate, read the catalogue, then web server, Celery worker and beat in the foreground,
# each started again on its own when it exits (deploy/honcho-start).
# An unreachable upstream is reported; the server still starts on the last good catalogue.
run: venv $(KEY)
	$(BIN)/python manage.py migrate --no-input
	-$(BIN)/python manage.py sync_upstream
	exec deploy/honcho-start

# The same, offline, against the small mirror the tests use.
demo: venv
	$(BIN)/python tests/fixtures/mirror.py $(DEMO_DIR)/mirror
	ASU_VAR_DIR=$(DEMO_DIR) ASU_UPSTREAM_URL=file://$(DEMO_DIR)/mirror \
		ASU_UPSTREAM_KEYS=$(CURDIR)/tests/fixtures/keys/trusted $(MAKE) run

# The browser tests drive Debian's chromium (Playwright cannot download its own offline):
# installed here when root can, else those tests are skipped and say why.
test: venv $(KEY)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -qq chromium >/dev/null 2>&1; } \
		|| echo "make test: no chromium (apt-get install chromium): browser tests are skipped"
	$(BIN)/pytest

lint: venv $(KEY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

bench: venv $(KEY)
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache .ruff_cache
