# resseg-ray: every set-up step lives here. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BASE_STAMP := $(VENV)/.installed-base

.PHONY: demo-damage setup demo test typecheck lint docs bench lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# (Re)install when the dependency files change. torch==2.13.0 is pinned in pyproject.toml;
# constraints.txt pins the rest of the tested, `pip check`-clean set.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '.[test,docs]'
	$(PY) -m pip check
	touch $(STAMP) $(BASE_STAMP)

# The demo needs the package only, not the test tools (playwright, mypy, moto, ...).
$(BASE_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -c constraints.txt -e .
	$(PY) -m pip check
	touch $(BASE_STAMP)

# The map page's JavaScript (Leaflet, Leaflet-Geoman) and the API docs page's (Swagger UI) come
# from the npm registry at build time,
# pinned by web/package-lock.json, and ships inside the package (the page needs no internet).
VENDOR := resseg_ray/serving/static/vendor
$(VENDOR)/.built: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "error: the map page's JavaScript needs npm (Node.js): apt-get install npm"; exit 2; }
	npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/leaflet $(VENDOR)/geoman
	cp -r web/node_modules/leaflet/dist/leaflet.js web/node_modules/leaflet/dist/leaflet.css \
		web/node_modules/leaflet/dist/images web/node_modules/leaflet/LICENSE $(VENDOR)/leaflet/
	cp web/node_modules/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js \
		web/node_modules/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css \
		web/node_modules/@geoman-io/leaflet-geoman-free/LICENSE $(VENDOR)/geoman/
	mkdir -p $(VENDOR)/swagger-ui
	cp web/node_modules/swagger-ui-dist/swagger-ui-bundle.js web/node_modules/swagger-ui-dist/swagger-ui.css \
		web/node_modules/swagger-ui-dist/LICENSE $(VENDOR)/swagger-ui/
	touch $@

# The project's own byte code. Where the environment sets PYTHONDONTWRITEBYTECODE=1 (these
# machines and their CI do), no process writes it, so each of the hundreds a run starts (Ray
# workers, jobs) compiles the modules it imports again: ~0.25 s of CPU per process for the
# training loop's. pip writes the libraries' at install; this writes ours (up to date files are
# skipped; a file changed later is compiled in memory, as without it).
BYTECODE := $(PY) -m compileall -q resseg_ray jobs tests bench serve_app.py

setup: $(STAMP) $(VENDOR)/.built
	@$(BYTECODE)

# The map page's ES modules, linted by ESLint (a devDependency in web/package.json).
ESLINT := web/node_modules/.bin/eslint -c web/eslint.config.mjs --max-warnings 0 resseg_ray/serving/static/js

# The browser tests (the MLflow UI page) need Debian's chromium; CI runs as root.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "error: the browser tests need chromium at $(CHROMIUM): apt-get install chromium (as root)"; exit 2; fi; \
	$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Main job on the embedded demo data: train prop18 on the demo scenes (prepared under
# data/demo on first use) with Ray Train, tracked in MLflow (mlflow.db), then evaluate
# the trained model on the three held-out test scenes (Table II row for prop18).
# Re-running resumes/reuses the finished run "demo-prop18" (see README). Then the mapper's path
# (README, "From an open-data event to a JOSM file"): the test scenes as an open-data-shaped
# STAC catalog (data/demo/stac), segmented from it into runs/demo-maps: mask and probability
# COGs, squared building outlines, a JOSM file and a STAC item per scene with catalog.json.
demo: $(BASE_STAMP)
	@$(BYTECODE)
	$(PY) jobs/train.py --config configs/demo.yaml
	$(PY) jobs/compare_depths.py --config configs/demo.yaml --archs prop18 --prefix demo
	$(PY) jobs/make_catalog.py --scenes data/demo/scenes/test --out data/demo/stac --collection demo-event --rgb 3 2 1
	$(PY) jobs/predict.py --model runs/demo-prop18/model.resseg.safetensors --scenes data/demo/stac/catalog.json \
		--out runs/demo-maps --osm --regularize

# The damage demo (docs/demo.md): the demo's disasters, a damage network trained on three events
# (from the building demo's model when `make demo` made it), two unseen events mapped and scored.
DAMAGE_INIT := $(if $(wildcard runs/demo-prop18/model.resseg.safetensors),--set model.init_from=runs/demo-prop18/model.resseg.safetensors,)
DAMAGE_TEST := storm_01 quake_02
demo-damage: $(BASE_STAMP)
	@$(BYTECODE)
	$(PY) jobs/prepare.py --demo-damage --config configs/damage_demo.yaml --out data/demo-damage
	$(PY) jobs/train.py --config configs/damage_demo.yaml $(DAMAGE_INIT)
	$(PY) jobs/damage.py --model runs/demo-damage-prop18/model.resseg.safetensors --out runs/demo-damage-maps \
		--config configs/damage_demo.yaml \
		--pre $(foreach e,$(DAMAGE_TEST),data/demo-damage/scenes/$(e)_pre.tif) \
		--post $(foreach e,$(DAMAGE_TEST),data/demo-damage/scenes/$(e)_post.tif)
	$(PY) jobs/evaluate_damage.py --report runs/demo-damage-maps/scores.json \
		--pred $(foreach e,$(DAMAGE_TEST),runs/demo-damage-maps/$(e)_damage.tif) \
		--truth $(foreach e,$(DAMAGE_TEST),data/demo-damage/labels/$(e)_pair_labels.tif)

# The set-up steps run side by side (pip is mostly one core; npm and apt-get wait on disk and
# network): about a minute less on a fresh 2-core machine than one after the other. The type
# check and the manual (one core each, about a minute from a fresh clone) run beside the tests,
# which leave a third of two cores idle (measured over a whole run, /proc/stat); their output
# follows the tests', and either failing fails `make test`.
CHECKS_LOG := $(VENV)/.test-checks.log
test:
	$(MAKE) --no-print-directory -j3 setup $(CHROMIUM)
	$(PY) -m ruff check .
	$(ESLINT)
	$(VENV)/bin/lint-imports
	@{ $(MAKE) --no-print-directory -j2 typecheck docs > $(CHECKS_LOG) 2>&1; echo $$? > $(CHECKS_LOG).rc; } & \
	$(PY) -m pytest -q --durations=40; tests=$$?; wait; \
	echo "--- make typecheck docs (beside the tests):"; cat $(CHECKS_LOG); checks=$$(cat $(CHECKS_LOG).rc); \
	test $$tests -eq 0 && test $$checks -eq 0

typecheck: setup
	$(PY) -m mypy

# The manual (docs/, Sphinx + MyST), warnings as errors: its configuration reference and API
# pages are generated from the code at each build (docs/_ext). Open docs/_build/html/index.html.
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

lint: setup typecheck
	$(PY) -m ruff check .
	$(ESLINT)
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m bench.model_throughput
	$(PY) -m bench.data_pipeline
	$(PY) -m bench.train_throughput
	$(PY) -m bench.predict_scene

# Refresh constraints.txt from the current venv (after changing dependencies).
lock: setup
	{ echo "# Tested dependency set (pip check clean), applied by the Makefile with pip -c."; \
	  echo "# torch is pinned in pyproject.toml (torch==2.13.0) so GPU users get the CUDA build."; \
	  echo "# Regenerate: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -vE '^(torch|resseg-ray)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) runs data mlflow.db mlruns .pytest_cache .ruff_cache docs/_build docs/_generated docs/api
