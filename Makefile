# The few commands people type. Each creates .venv and installs g2g into it when needed.
#   make run                       quick preset on real Fashion-MNIST (ARGS="model=mixer" to add overrides)
#   make test                      the fast tests (the integration tier left out)
#   make test-full                 every test (what CI runs)
#   make sweep STUDY=p_inter       a named study (conf/study/) with the quick preset, in parallel
#   make ui                        MLflow UI on the runs in ./mlflow.db, with a link to each experiment's runs
#   make results                   the results studies (docs/studies.md), then docs/results.md
#   make published                 the published setting (6 jobs of 20 epochs), then its section
#   make tuned                     the tuned comparison: a search per model, its best trial on 3 seeds, then its section
#   make tuned-mixer               one model's part of it (search, then its best trial on 3 seeds)
#   make precision                 the precision study (bf16-mixed against 32), then its section
#   make data                      Fashion-MNIST into ./data (the Debian package's files or a download)
#   make gpu-check BUDGET=60       on a CUDA machine: tests, benchmarks, checks, published seeds 43-44 into gpu_check_out/
#   make clean-venv                remove .venv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ARGS ?=

STUDY ?= p_inter
BUDGET ?= 60

# the tuned comparison (docs/results.md): the same search for each model (TUNED_TRIALS trials of
# hparams_search=lif_quick, the median pruner judging from the 4th trial on), the best trial
# trained again on the full training set with 3 seeds, beside the untuned defaults
TUNED_MODELS ?= dense dense_matched index random mixer
TUNED_TRIALS ?= 8
TUNED := experiment=quick tracking.experiment=g2g_tuned train.progress=false
comma := ,
space := $(subst ,, )

.PHONY: run test test-full ui data sweep results published tuned tuned-untuned $(TUNED_MODELS:%=tuned-%) precision gpu-check clean-venv

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	touch $(INSTALLED)

data: $(INSTALLED)
	$(BIN)/python -m g2g.data fashionmnist --root data

run: data
	$(BIN)/python run.py experiment=quick $(ARGS)

test: $(INSTALLED)
	$(BIN)/python -m pytest -m "not integration"

test-full: $(INSTALLED)
	$(BIN)/python -m pytest

sweep: data
	@if [ "$(STUDY)" = published ]; then \
	  echo "error: STUDY=published has its own preset (experiment=fmnist_h1024), which experiment=quick would replace: run make published" >&2; exit 2; fi
	$(BIN)/python run.py study=$(STUDY) experiment=quick $(ARGS)

results: data
	$(BIN)/python run.py study=results_init
	$(BIN)/python run.py study=results_p_inter
	$(BIN)/python run.py study=results_readout
	$(BIN)/python run.py study=results_dst
	$(BIN)/python -m g2g.report g2g_results --page docs/results.md

published: data
	$(BIN)/python run.py study=published $(ARGS)
	$(BIN)/python -m g2g.report g2g_published --page docs/results.md --section published

tuned: $(TUNED_MODELS:%=tuned-%) tuned-untuned
	$(BIN)/python -m g2g.report g2g_tuned --page docs/results.md --section tuned

# one model's search, then its best trial on 3 seeds (make tuned-mixer)
$(TUNED_MODELS:%=tuned-%): tuned-%: data
	$(BIN)/python run.py hparams_search=lif_quick $(TUNED) model=$* hydra.sweeper.n_trials=$(TUNED_TRIALS) \
	  hydra.sweeper.pruner.n_startup_trials=3 hydra.sweep.dir=multirun/tuned/search_$*
	$(BIN)/python run.py -m $(TUNED) model=$* seed=42,43,44 hydra.sweep.dir=multirun/tuned/best_$* \
	  $$($(BIN)/python -m g2g.search best multirun/tuned/search_$*)

tuned-untuned: data
	$(BIN)/python run.py -m $(TUNED) model=$(subst $(space),$(comma),$(strip $(TUNED_MODELS))) seed=42,43,44 \
	  hydra.sweep.dir=multirun/tuned/untuned

precision: data
	$(BIN)/python run.py study=results_precision
	$(BIN)/python -m g2g.report g2g_precision --page docs/results.md --section precision

gpu-check: data
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh gpu_check_out $(BUDGET) --data-root data

ui: $(INSTALLED)
	$(BIN)/python -m g2g.tracking links
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
