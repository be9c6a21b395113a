# Developer entry points. `make run` and `make test` install first, but only when
# pyproject.toml changed since the last install (the stamp file records it).

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the test suite runs for itself: throwaway PgBouncer and Redis servers, wrk (the
# benchmarks' load generator, which the bench suites' tests drive), and Debian's chromium (the
# docs pages' browser test drives it through Playwright; no browser is downloaded).
TEST_SERVERS := pgbouncer redis-server wrk chromium

.PHONY: install run test lint test-servers

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The demo: a development token for this run only, printed with a first write to try.
# The service's own default stays closed (no API_TOKENS, no writes).
run: $(STAMP)
	@token="$${API_TOKENS:-dev-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(12))')}"; \
	if [ -z "$${API_TOKENS:-}" ]; then \
	  echo "Development token for this run: $$token"; \
	  echo "Try a write:"; \
	  echo "  curl -X POST http://127.0.0.1:8000/users -H 'Authorization: Bearer $$token' \\"; \
	  echo "       -H 'Content-Type: application/json' -d '{\"name\": \"zoe\", \"email_address\": \"zoe@example.com\"}'"; \
	fi; \
	API_TOKENS="$$token" $(BIN)/service serve

test: $(STAMP) test-servers
	$(BIN)/pytest

test-servers:
	@missing=""; for tool in $(TEST_SERVERS); do \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages) for the test suite"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service
