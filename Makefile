# Two commands on a fresh machine:  `make demo` (install + scan the bundled samples)  and  `make test`.
# Both create or reuse the virtual environment in $(VENV). torch is pinned by constraints.txt to the CPU build.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_OUT ?= demo-output

FACES ?= ../shared/data/faces
TRAIN_DIR ?= build/faces
BUNDLE := gcage_fast/models/bundled/faces-gcage
EVAL_PERTURB := none,jpeg:75,jpeg:50,blur:1,noise:5,resize:0.5,grayscale

.PHONY: install demo test bundled-model docs-images clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[cpu,dev,triton]'
	touch $@

demo: install
	$(BIN)/gcage-fast scan gcage_fast/samples/images -o $(DEMO_OUT) --heatmaps png --overwrite
	$(BIN)/gcage-fast verify $(DEMO_OUT)
	@echo ""
	@echo "gcage-fast is installed in $(VENV): run '$(BIN)/gcage-fast --help', or 'source $(BIN)/activate' first."
	@echo "The results are in $(DEMO_OUT)/results/; for example:"
	@echo "  $(BIN)/python -c \"import duckdb; duckdb.sql(\\\"select relpath, p_fake, verdict from '$(DEMO_OUT)/results/*.parquet'\\\").show()\""

test: install $(VENV)/.installed-watermark
	$(BIN)/pytest

# The tests also cover the opt-in watermark decoder (its extra pulls opencv-python; the constraints keep torch).
$(VENV)/.installed-watermark: $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[cpu,dev,triton,watermark]'
	touch $@

# Trains the bundled default model on the faces set (training split only; threshold from the validation split),
# evaluates it on the held-out test split and copies weights, spec and records into $(BUNDLE).
bundled-model: install
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[cpu,dev,train]'
	$(BIN)/gcage-fast train-base $(FACES) -o $(TRAIN_DIR)/base --arch effnet-lite0 --pretrained --epochs 15 \
		--patience 4 --blur 0.1 --jpeg 0.1 --threads 2 --workers 1 --name faces-base
	$(BIN)/gcage-fast train-head $(FACES) --base $(TRAIN_DIR)/base -o $(TRAIN_DIR)/gcage --epochs 30 \
		--patience 6 --blur 0.1 --jpeg 0.1 --threads 2 --workers 1 --name faces-gcage
	$(BIN)/gcage-fast eval $(FACES) --model $(TRAIN_DIR)/gcage --split test --perturb $(EVAL_PERTURB) \
		--top-k 1,5 --threads 2 --workers 1 --json $(TRAIN_DIR)/eval-test.json > $(TRAIN_DIR)/eval-test.md
	mkdir -p $(BUNDLE)
	for f in model.json base.safetensors head.safetensors split.csv; do cp $(TRAIN_DIR)/gcage/$$f $(BUNDLE)/; done
	cp $(TRAIN_DIR)/base/train_log.csv $(BUNDLE)/train_log_base.csv
	cp $(TRAIN_DIR)/gcage/train_log.csv $(BUNDLE)/train_log_head.csv
	cp $(TRAIN_DIR)/base/training.json $(BUNDLE)/training_base.json
	cp $(TRAIN_DIR)/gcage/training.json $(BUNDLE)/training_head.json
	cp $(TRAIN_DIR)/eval-test.json $(TRAIN_DIR)/eval-test.md $(BUNDLE)/

# The pictures in README.md: an explanation, every CAM method on one patch, and the report of the demo scan
# (the screenshot needs Chromium).
docs-images: demo
	mkdir -p docs/images
	$(BIN)/gcage-fast explain gcage_fast/samples/images/rocket.jpg -o docs/images/explain-rocket.png --cam gradcam++
	$(BIN)/gcage-fast explain gcage_fast/samples/images/rocket.jpg -o docs/images/explain-rocket-all-cams.png \
		--all-cams --patch 1 --cam all --json docs/images/explain-rocket-all-cams.json
	$(BIN)/gcage-fast report $(DEMO_OUT) -o $(DEMO_OUT)/report.html
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1900 \
		--screenshot=docs/images/report.png file://$(abspath $(DEMO_OUT))/report.html

clean:
	rm -rf $(VENV) .demo $(DEMO_OUT) .pytest_cache build
