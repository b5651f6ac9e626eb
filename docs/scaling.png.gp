set terminal pngcairo size 1100,700
set output 'docs/scaling.png'
set xlabel 'simulated GPUs'
set ylabel 'output tokens/s at concurrency 64 per GPU'
set title 'simulated GPUs 4 times slower than their data sheets'
set logscale xy 2
set key outside right
set grid
plot 'docs/scaling.png.dat' index 0 with linespoints title 'hy-mt1.5-1.8b a100-40gb chosen', 'docs/scaling.png.dat' index 1 with linespoints title 'hy-mt1.5-1.8b a100-40gb pipeline', 'docs/scaling.png.dat' index 2 with linespoints title 'hy-mt1.5-1.8b rtx-3090 chosen', 'docs/scaling.png.dat' index 3 with linespoints title 'hy-mt1.5-1.8b rtx-3090 pipeline', 'docs/scaling.png.dat' index 4 with linespoints title 'qwen2.5-3b a100-40gb chosen', 'docs/scaling.png.dat' index 5 with linespoints title 'qwen2.5-3b a100-40gb pipeline', 'docs/scaling.png.dat' index 6 with linespoints title 'qwen2.5-3b rtx-3090 chosen', 'docs/scaling.png.dat' index 7 with linespoints title 'qwen2.5-3b rtx-3090 pipeline'
