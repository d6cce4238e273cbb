#!/usr/bin/env bash
# The full-EURLEX57K CPU run reported in docs/results.md: AttentionXML (normal loss) sized for 2 CPU
# cores and ~65 minutes of training, then the test split. Needs the dataset in data/eurlex57k.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SIZE=(--model.init_args.embedding_dim 100 --model.init_args.hidden_size 64 --model.init_args.linear_sizes '[128]'
      --model.init_args.dropout 0.3 --model.init_args.optimizer.init_args.lr 0.002
      --data.init_args.max_length 256 --data.init_args.max_vocab_size 50000 --data.init_args.min_word_freq 2
      --data.init_args.batch_size 32 --data.init_args.eval_batch_size 128)
$PY -m xmtc fit --config configs/axml_eurlex_normal.yaml "${SIZE[@]}" \
  --trainer.max_epochs 3 --trainer.max_time 00:01:05:00 --trainer.val_check_interval 0.5 \
  --trainer.enable_progress_bar false --trainer.log_every_n_steps 50
RUN=$(ls -td logs/axml_eurlex_normal/version_* | head -n 1)
$PY -m xmtc test --config configs/axml_eurlex_normal.yaml "${SIZE[@]}" --trainer.enable_progress_bar false \
  --ckpt_path "$(ls "$RUN"/checkpoints/best-*.ckpt | head -n 1)"
