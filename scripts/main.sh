#!/usr/bin/env bash
# The main job of the README:  bash scripts/main.sh [--out=DIR] [more trainers.demo flags]
# meta-train → adapt → export → serve → sample over gRPC, on small defaults (~5 min on
# 2 CPU cores). Creates .venv on first use. Data: TFMETA_DATA_DIR (or --data_dir=...);
# without either, Omniglot is downloaded through TFDS.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec python -m trainers.demo "$@"
