# Two entry points (see README "Quick start"):
#   make demo   set up .venv, index the bundled sample archive and run example queries
#   make test   set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := examples/sample_archive
# explicit, so that a SARSEARCH_DB set in the shell does not send the demo elsewhere
DEMO_DB := .sarsearch
BMP2_CHIP := $(firstword $(sort $(wildcard $(SAMPLE)/mstar_soc/BMP2/*.jpeg)))

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev,ray]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/sarsearch index $(SAMPLE) --db $(DEMO_DB)
	$(BIN)/sarsearch info --db $(DEMO_DB)
	$(BIN)/sarsearch query "T72 tank" -k 5 --db $(DEMO_DB)
	$(BIN)/sarsearch query "a cargo ship at sea" -k 5 --db $(DEMO_DB)
	$(BIN)/sarsearch query --image $(BMP2_CHIP) -k 5 --db $(DEMO_DB)
	$(BIN)/sarsearch query "armored vehicle" --where "dataset = 'MSTAR-SOC' AND label <> 'T72'" -k 5 --db $(DEMO_DB)

test: $(BIN)/.installed lint
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check sarclip_search index training cli benchmarks tests

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_end_to_end.py

clean:
	rm -rf $(DEMO_DB) build *.egg-info
