"""One CAM training step in PyTorch CPU, same network and shapes as bench/torch_step.ts.
ResNet basic blocks (7x7/2 stem + maxpool, stages width*[1,2,4,8], depth [1,1,1,1], output
stride 8 by not downsampling stages 3-4), BatchNorm (training mode, batch statistics), ReLU,
GAP -> 1x1 conv (no bias), multi-label soft-margin loss, AdamW (backbone lr 0.003, head 10x,
weight decay 1e-4). Input [batch, 3, size, size] uniform in [0, 1), 4 classes.

    python bench/torch_step.py [width] [batch] [size] [steps]   -> median step time as JSON
    python bench/torch_step.py --serve [width] [batch] [size]    -> used by bench/torch_step.ts:
        prints a JSON header line after 2 warm-up steps, then for each line "N" on stdin runs N
        steps and prints {"times": [ms, ...]}; exits on EOF.
Threads: torch's default (torch.get_num_threads(), the physical core count; OMP_NUM_THREADS
overrides it). bench/torch_step.ts gives TensorFlow the same intra-op thread count.
"""
import json, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

args = sys.argv[1:]
serve = '--serve' in args
args = [a for a in args if a != '--serve']
width, batch, size, steps = (int(a) for a in (args + ['16', '16', '112', '10'][len(args):]))
torch.manual_seed(0)

class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        h = self.b2(self.c2(h))
        return F.relu(h + (self.down(x) if self.down is not None else x))

class Net(nn.Module):
    def __init__(self, w, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 1), Block(4 * w, 8 * w, 1))
        self.cls = nn.Conv2d(8 * w, classes, 1, bias=False)
    def forward(self, x):
        f = self.stages(self.stem(x))
        return self.cls(F.adaptive_avg_pool2d(f, 1)).flatten(1)

net = Net(width, 4)
net.train()
opt = torch.optim.AdamW([{'params': list(net.stem.parameters()) + list(net.stages.parameters())},
                         {'params': net.cls.parameters(), 'lr': 0.03}], lr=0.003, weight_decay=1e-4)
x = torch.rand(batch, 3, size, size)
y = (torch.rand(batch, 4) > 0.5).float()

def step():
    opt.zero_grad(set_to_none=True)
    loss = F.multilabel_soft_margin_loss(net(x), y)
    loss.backward()
    opt.step()
    return loss.item()

def timed(n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); step(); out.append((time.perf_counter() - t) * 1000)
    return out

for _ in range(2):
    step()
header = {'framework': 'torch', 'version': torch.__version__, 'threads': torch.get_num_threads(),
          'interop_threads': torch.get_num_interop_threads(), 'width': width, 'batch': batch, 'size': size}
if serve:
    print(json.dumps(header), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps({'times': timed(int(line))}), flush=True)
else:
    times = sorted(timed(steps))
    print(json.dumps({**header, 'median_ms': times[len(times) // 2], 'min_ms': times[0]}))
