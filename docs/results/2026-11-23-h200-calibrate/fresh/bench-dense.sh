set -e
pyserve bench --host 127.0.0.1 --isl 1024 --osl 256 --concurrency 64 --num-prompts 128 --out /tmp/res/dense-c64
pyserve bench --host 127.0.0.1 --isl 1024 --osl 256 --concurrency 128 --num-prompts 256 --out /tmp/res/dense-c128
pyserve bench --host 127.0.0.1 --isl 1024 --osl 256 --concurrency 256 --num-prompts 512 --out /tmp/res/dense-c256
