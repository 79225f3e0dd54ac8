"""Golden fixtures: the reference LFP (lfprop 1.0.0, LFP-epsilon) on a tiny ResNet with BatchNorm.

    .reference-venv/bin/python scripts/reference/resnet_fixtures.py OUTDIR

Writes safetensors files into OUTDIR (meant for Tests/LFPTests/Conformance/models) and prints, per file,
the largest |value| of the logits and of every feedback tensor, plus numerical checks of the formulas in
scripts/reference/RESNET-NOTES.md (each rule recomputed by hand from hooked inputs, compared with lfprop).
Deterministic: fixed seed, one thread; two runs write byte-identical files.

Model (`TinyResNet`): torchvision's ResNet layout and state_dict names, built from lfprop's own blocks
(`lfprop.model.custom_resnet.CustomBasicBlock`, whose residual add is the explicit `Sum` module that
LFPEpsilonComposite gives the epsilon rule). lfprop's `CustomResNet` class itself cannot be used at this
size: torchvision's `ResNet.__init__` fixes the stem (7x7/2 conv with 64 channels + 3x3/2 maxpool) and the
widths 64-512, so the top level is written here, copying `CustomResNet._forward_impl` without the maxpool
and without layer3/layer4. No maxpool anywhere.

    input                                  [N=4, 3, 8, 8]
    conv1    Conv2d(3, 8, 3, stride 1, padding 1, bias=False)
    bn1      BatchNorm2d(8)                (eps 1e-5, momentum 0.1, affine, tracks running stats)
    relu     ReLU
    layer1.0 CustomBasicBlock(8 -> 8, stride 1, no downsample):
               conv1 Conv2d(8, 8, 3, s1, p1, bias=False), bn1, relu,
               conv2 Conv2d(8, 8, 3, s1, p1, bias=False), bn2,
               sum(out, x) (the `Sum` module, attribute `sum`), relu          -> [N, 8, 8, 8]
    layer2.0 CustomBasicBlock(8 -> 16, stride 2):
               conv1 Conv2d(8, 16, 3, s2, p1, bias=False), bn1, relu,
               conv2 Conv2d(16, 16, 3, s1, p1, bias=False), bn2,
               downsample = Sequential(0: Conv2d(8, 16, 1, stride 2, bias=False), 1: BatchNorm2d(16)),
               sum(out, downsample(x)), relu                                  -> [N, 16, 4, 4]
    avgpool  AdaptiveAvgPool2d((1, 1)); torch.flatten(x, 1)                  -> [N, 16]
    fc       Linear(16, 10)                                                   -> [N, 10]

(Each block's one ReLU module is applied twice, as in torchvision.) Conv/Linear weights: PyTorch's default
init. BatchNorm: |gamma| in [0.5, 1.5] with a random sign (negative with probability 0.25, so that code
using gamma where |gamma| belongs is caught), beta and running_mean in [-0.2, 0.2], running_var in
[0.5, 1.5], num_batches_tracked 0. Input standard normal, labels uniform in 0..9.

Feedback: `propagator_lxt.LFPEpsilonComposite()` (epsilon 1e-6) and `rewards.SoftmaxLossReward`, the step of
/work/shared/reference/README.md. Everything is computed in float64 from the float32-rounded parameters and
input, then stored as float32 (a float32 run of the same code is compared and reported as the noise floor).

Files and tensors (all float32 unless noted):
  resnet_bn_eval.safetensors         model.eval()  (running statistics in the forward)
  resnet_bn_train.safetensors        model.train() (batch statistics; running stats updated once)
  resnet_bn_eval_relu_lfp0.safetensors  eval, LFPEpsilonComposite(epsilon=0.0): LFP-0. lfprop has no
                                     separate LFP-0/"zero" composite; epsilon 0 is its LFP-0.
  state.<name>             every state_dict entry BEFORE the step (num_batches_tracked: int64 scalar)
  input [4,3,8,8], labels int64 [4], logits [4,10], reward [4,10] (feedback fed back at the logits)
  feedback.<param>         p.feedback for every named parameter (summed over batch and positions)
  gradient.<param>         d/dp of F.cross_entropy(logits, labels) (batch mean), plain autograd on a fresh
                           copy of the same state in the file's mode (no composite)
  input_feedback [4,3,8,8] feedback arriving at the input
  layer_feedback.<module>  feedback arriving at the OUTPUT of each bn / sum / avgpool / fc module (what that
                           module's rule receives), for locating a mismatch. Not stored for ReLUs (identity:
                           equal to the feedback at their input) nor convs (a conv's output feeds one BN, so
                           it is that BN's input feedback), to keep the files small.
  running.<bn>.running_mean / running_var / num_batches_tracked   (train file only) after the forward
safetensors metadata: one key, "description" (rule, epsilon, mode, reward, seed).
"""
import copy
import hashlib
import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # lfp_compat.py: lxt 0.6 -> lxt 2.1 import shim
import lfp_compat  # noqa: E402,F401  (must come before lfprop.propagation)
import fixture_support as fs  # noqa: E402
from lfprop.model.custom_resnet import CustomBasicBlock, Sum  # noqa: E402
from lfprop.propagation import propagator_lxt  # noqa: E402
from lfprop.rewards import reward_functions as rewards  # noqa: E402
from lxt import rules as lrules  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torchvision.models.resnet import conv1x1  # noqa: E402

SEED = 20240607
N, NUM_CLASSES = 4, 10
EPSILON = 1e-6  # LFPEpsilonComposite's default
LFP0 = 0.0  # marker for LFP-0, see lfp0_epsilon()


def lfp0_epsilon(dtype):
    """LFP-0 as LFPEpsilonComposite with a (normal, nonzero) epsilon far below every nonzero |z|.

    lfprop has no LFP-0 composite; LFPEpsilonComposite(epsilon=0.0) gives NaN on this model (0/0 where a
    channel is dead at the AdaptiveAvgPool2d output: 9 of its 64 outputs are exactly 0 in eval mode).
    Wherever z == 0 the incoming feedback is 0 too (every rule sends `input * ...`, so feedback is 0 where
    the value is 0), so with epsilon = 1e-300 (float64) the result is exactly LFP-0 with the project's
    convention "f = 0 where z == 0" (LFP-MATH.md, Conformance/README.md): 0 / 1e-300 = 0 there, and
    z + 1e-300 == z elsewhere. (1e-37 for the float32 comparison run, where 1e-300 would round to 0.)
    """
    return 1e-300 if dtype == torch.float64 else 1e-37


class TinyResNet(nn.Module):
    """torchvision ResNet layout (same attribute names), lfprop's CustomBasicBlock, no maxpool, 2 stages."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(CustomBasicBlock(8, 8))
        downsample = nn.Sequential(conv1x1(8, 16, stride=2), nn.BatchNorm2d(16))
        self.layer2 = nn.Sequential(CustomBasicBlock(8, 16, stride=2, downsample=downsample))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):  # CustomResNet._forward_impl without maxpool, layer3, layer4
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def make_model_and_batch():
    torch.manual_seed(SEED)
    model = TinyResNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                sign = torch.where(torch.rand(c) < 0.25, -1.0, 1.0)
                m.weight.copy_(sign * (0.5 + torch.rand(c)))
                m.bias.copy_(0.4 * torch.rand(c) - 0.2)
                m.running_mean.copy_(0.4 * torch.rand(c) - 0.2)
                m.running_var.copy_(0.5 + torch.rand(c))
    x = torch.randn(N, 3, 8, 8)
    labels = torch.randint(0, NUM_CLASSES, (N,), dtype=torch.int64)
    return model, x, labels


# ----------------------------------------------------------------------------------------------------------
# One LFP step exactly as the reference README does it, plus hooks that record what every rule saw.


def lfp_step(model, x, labels, train, epsilon, dtype):
    if epsilon == LFP0:
        epsilon = lfp0_epsilon(dtype)
    m = copy.deepcopy(model).to(dtype)
    m.train(train)
    trace = {}  # wrapper name -> list of calls: {"inputs", "output", "grad_out"}
    composite = propagator_lxt.LFPEpsilonComposite(epsilon=epsilon)
    with composite.context(m) as modified:
        hooks = []
        for name, mod in modified.named_modules():
            if isinstance(mod, (propagator_lxt.LFPEpsilon, lrules.IdentityRule)):
                hooks.append(mod.register_forward_hook(_recorder(trace, name)))
        inp = x.to(dtype).detach().requires_grad_(True)
        out = modified(inp)
        reward = rewards.SoftmaxLossReward(torch.device("cpu"))(out, labels).detach()
        (input_feedback,) = torch.autograd.grad((out,), (inp,), grad_outputs=(reward,))
        for h in hooks:
            h.remove()
    feedback = {n: p.feedback.detach().clone() for n, p in m.named_parameters()}
    return dict(model=m, logits=out.detach(), reward=reward, input_feedback=input_feedback,
                feedback=feedback, trace=trace, epsilon=epsilon)


def _recorder(trace, name):
    def hook(module, inputs, output):
        call = {"inputs": [i.detach() for i in inputs], "output": output.detach()}
        trace.setdefault(name, []).append(call)
        output.register_hook(lambda g: call.__setitem__("grad_out", g.detach()))
    return hook


def gradient_step(model, x, labels, train, dtype):
    """Plain autograd gradient of the mean cross-entropy on a fresh copy (no composite)."""
    m = copy.deepcopy(model).to(dtype)
    m.train(train)
    loss = F.cross_entropy(m(x.to(dtype)), labels)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    return {n: g.detach() for (n, _), g in zip(m.named_parameters(), grads)}, m


# ----------------------------------------------------------------------------------------------------------
# Hand re-computation of every rule from the recorded inputs (the formulas of RESNET-NOTES.md).


def stab(z, eps):
    """zennit.core.stabilize(clip=False, norm_scale=False): z + eps * sign(z), sign(0) = +1."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def verify(res, train, eps):
    """Returns {check name: max abs difference} between hand formulas and what lfprop produced."""
    m, tr, fb = res["model"], res["trace"], res["feedback"]
    mods = dict(m.named_modules())
    d = {}
    conv_share = {}  # conv name -> feedback it sends to its input

    def diff(key, a, b):
        d[key] = max(d.get(key, 0.0), (a - b).abs().max().item())

    def g_out(name, call=0):
        return tr[name][call]["grad_out"]

    def inp(name, call=0, k=0):
        return tr[name][call]["inputs"][k]

    # (e) reward = logits * (onehot - softmax(logits))
    y = res["logits"]
    onehot = F.one_hot(res["labels"], NUM_CLASSES).to(y)
    diff("reward", res["reward"], y * (onehot - torch.softmax(y, 1)))

    # feedback arriving at an input = feedback at the producer's output (unique consumer), or the input
    # feedback for the stem conv
    producer_of = {"conv1": None, "bn1": "conv1", "layer1.0.conv2": ("layer1.0.relu", 0),
                   "layer2.0.conv2": ("layer2.0.relu", 0), "fc": "avgpool",
                   "avgpool": ("layer2.0.relu", 1)}
    for blk in ("layer1.0", "layer2.0"):
        producer_of[f"{blk}.bn1"] = f"{blk}.conv1"
        producer_of[f"{blk}.bn2"] = f"{blk}.conv2"
    producer_of["layer2.0.downsample.1"] = "layer2.0.downsample.0"

    def arrived_at_input(name):
        p = producer_of[name]
        if p is None:  # the model input
            return res["input_feedback"]
        if isinstance(p, tuple):
            return g_out(*p)
        return g_out(p)

    for name, mod in mods.items():
        if name not in tr:
            continue
        if isinstance(mod, nn.Conv2d):  # (c) epsilon rule, conv
            a, R, z = inp(name), g_out(name), tr[name][0]["output"]
            s = R / stab(z, eps)
            w = mod.weight
            kw = dict(stride=mod.stride, padding=mod.padding)
            diff("conv weight feedback", fb[name + ".weight"],
                 w.abs() * torch.nn.grad.conv2d_weight(a, w.shape, s, **kw))
            share = a * torch.nn.grad.conv2d_input(a.shape, w, s, **kw)
            conv_share[name] = share
            if name in producer_of:  # input with a single consumer
                diff("conv input feedback", arrived_at_input(name), share)
        elif isinstance(mod, nn.Linear):  # (c) epsilon rule, linear
            a, R, z = inp(name), g_out(name), tr[name][0]["output"]
            s = R / stab(z, eps)
            w, b = mod.weight, mod.bias
            diff("linear weight feedback", fb[name + ".weight"], w.abs() * (s.T @ a))
            diff("linear bias feedback", fb[name + ".bias"], b.abs() * s.sum(0))
            diff("linear input feedback", g_out("avgpool").flatten(1), a * (s @ w))
        elif isinstance(mod, nn.BatchNorm2d):  # (a) epsilon rule on the whole BN module
            bn = mod
            x, R, y_bn = inp(name), g_out(name), tr[name][0]["output"]
            s = R / stab(y_bn, eps)
            c = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
            if train:  # batch statistics, biased variance
                mu = x.mean((0, 2, 3))
                var = x.var((0, 2, 3), unbiased=False)
            else:
                mu, var = bn.running_mean, bn.running_var
            sigma = torch.sqrt(var + bn.eps)
            xhat = (x - c(mu)) / c(sigma)
            gamma, beta = bn.weight, bn.bias
            diff("bn forward", y_bn, c(gamma) * xhat + c(beta))
            diff("bn weight feedback", fb[name + ".weight"], gamma.abs() * (xhat * s).sum((0, 2, 3)))
            diff("bn bias feedback", fb[name + ".bias"], beta.abs() * s.sum((0, 2, 3)))
            if train:  # full BN backward through the batch statistics, times the raw input x
                gx = c(gamma / sigma) * (s - c(s.mean((0, 2, 3))) - xhat * c((s * xhat).mean((0, 2, 3))))
                d["bn input feedback (train): stats-as-constants would differ by"] = max(
                    d.get("bn input feedback (train): stats-as-constants would differ by", 0.0),
                    (arrived_at_input(name) - x * c(gamma / sigma) * s).abs().max().item())
            else:
                gx = c(gamma / sigma) * s
            diff("bn input feedback", arrived_at_input(name), x * gx)
        elif isinstance(mod, Sum):  # (b) epsilon rule on a + b
            blk = name.rsplit(".", 1)[0]
            a, b = inp(name, 0, 0), inp(name, 0, 1)
            s = g_out(name) / stab(a + b, eps)
            diff("sum feedback to residual branch", g_out(blk + ".bn2"), a * s)
            if blk == "layer2.0":
                diff("sum feedback to shortcut", g_out(blk + ".downsample.1"), b * s)
        elif isinstance(mod, nn.AdaptiveAvgPool2d):  # (d) epsilon rule, no parameters
            a, z = inp(name), tr[name][0]["output"]
            s = g_out(name) / stab(z, eps)
            diff("avgpool input feedback", g_out("layer2.0.relu", 1), a * s / (a.shape[2] * a.shape[3]))
    # identity rule: feedback at a ReLU's input is the feedback at its output
    diff("relu identity", g_out("bn1"), g_out("relu"))
    diff("relu identity", g_out("layer1.0.bn1"), g_out("layer1.0.relu", 0))
    diff("relu identity", g_out("layer2.0.bn1"), g_out("layer2.0.relu", 0))
    diff("relu identity", g_out("layer2.0.sum"), g_out("layer2.0.relu", 1))
    # layer1.0's input x feeds conv1 and the shortcut: autograd sums the two feedbacks
    a = inp("layer1.0.sum", 0, 1)
    s = g_out("layer1.0.sum") / stab(inp("layer1.0.sum", 0, 0) + a, eps)
    w = mods["layer1.0.conv1"].weight
    s1 = g_out("layer1.0.conv1") / stab(tr["layer1.0.conv1"][0]["output"], eps)
    diff("block input = conv1 share + shortcut share", g_out("relu"),
         a * s + a * torch.nn.grad.conv2d_input(a.shape, w, s1, stride=1, padding=1))
    # layer2.0's input feeds conv1 and downsample.0: the sum of both conv rules' input feedback
    diff("block input = conv1 share + downsample share", g_out("layer1.0.relu", 1),
         conv_share["layer2.0.conv1"] + conv_share["layer2.0.downsample.0"])
    return d


# ----------------------------------------------------------------------------------------------------------


def bn_names(model):
    return [n for n, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]


def build_file(model, x, labels, train, epsilon, dtype=torch.float64):
    res = lfp_step(model, x, labels, train, epsilon, dtype)
    res["labels"] = labels
    grads, _ = gradient_step(model, x, labels, train, dtype)
    res["gradient"] = grads
    mods = dict(model.named_modules())
    t = {f"state.{k}": v.clone() for k, v in model.state_dict().items()}
    t.update(input=x, labels=labels, logits=res["logits"], reward=res["reward"],
             input_feedback=res["input_feedback"])
    t.update({f"feedback.{k}": v for k, v in res["feedback"].items()})
    t.update({f"gradient.{k}": v for k, v in grads.items()})
    for name, calls in res["trace"].items():  # not for ReLUs (identity) and convs (= the next BN's input feedback)
        if not isinstance(mods[name], (nn.ReLU, nn.Conv2d)):
            t[f"layer_feedback.{name}"] = calls[0]["grad_out"]
    if train:
        for bn in bn_names(res["model"]):
            mod = dict(res["model"].named_modules())[bn]
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                t[f"running.{bn}.{buf}"] = getattr(mod, buf)
    return fs.file_tensors(t), res


def check_running_stats(model, res):
    """PyTorch's update: new = 0.9 * old + 0.1 * batch stat, variance unbiased (n / (n - 1))."""
    worst = 0.0
    after = dict(res["model"].named_modules())
    for bn in bn_names(model):
        x = res["trace"][bn][0]["inputs"][0]
        before = dict(model.named_modules())[bn]
        mean = 0.9 * before.running_mean.double() + 0.1 * x.mean((0, 2, 3))
        var = 0.9 * before.running_var.double() + 0.1 * x.var((0, 2, 3), unbiased=True)
        worst = max(worst, (after[bn].running_mean - mean).abs().max().item(),
                    (after[bn].running_var - var).abs().max().item())
        assert after[bn].num_batches_tracked.item() == before.num_batches_tracked.item() + 1
    return worst


def main():
    outdir = fs.output_dir(__doc__)
    model, x, labels = make_model_and_batch()

    cases = [("resnet_bn_eval", False, EPSILON), ("resnet_bn_train", True, EPSILON),
             ("resnet_bn_eval_relu_lfp0", False, 0.0)]
    ok = True
    for fname, train, eps in cases:
        tensors, res = build_file(model, x, labels, train, eps)
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert not bad, f"{fname}: non-finite tensors {bad}"
        how = "lfprop 1.0.0 LFPEpsilonComposite, computed in float64, stored float32"
        if eps == LFP0:
            how += "; LFP-0 = LFPEpsilonComposite(epsilon=1e-300), i.e. z/z with f = 0 where z == 0"
        # one metadata key: safetensors writes a multi-key metadata map in random order (not byte-reproducible)
        meta = {"description": f"rule={'zero' if eps == LFP0 else 'epsilon'} epsilon={eps!r} "
                               f"mode={'train' if train else 'eval'} reward=softmax seed={SEED}; {how}"}
        path = outdir / f"{fname}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        size = path.stat().st_size
        print(f"== {path.name}  ({size} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})")

        # largest magnitudes (the test tolerance is 1e-4 * max(1, max|ref|))
        for k in ["logits", "reward", "input_feedback"] + sorted(k for k in tensors if k.startswith("feedback.")):
            print(f"   max|{k}| = {tensors[k].abs().max().item():.6g}")

        # hand formulas vs lfprop (float64; should be ~1e-15 relative)
        zeros = {n: int((c[0]["output"] == 0).sum()) for n, c in res["trace"].items() if not n.endswith("relu")}
        nonzero_min = min(c[0]["output"][c[0]["output"] != 0].abs().min().item()
                          for n, c in res["trace"].items() if not n.endswith("relu"))
        print(f"   rule outputs z exactly 0: {({k: v for k, v in zeros.items() if v}) or 'none'}; "
              f"smallest nonzero |z| {nonzero_min:.3g}")
        for key, v in verify(res, train, res["epsilon"]).items():
            print(f"   check {key}: max abs diff {v:.3g}")
            if "would differ" not in key and v > 1e-9:
                ok = False
        if train:
            v = check_running_stats(model, res)
            print(f"   check running stats (momentum 0.1, unbiased var): max abs diff {v:.3g}")
            ok &= v < 1e-12

        # LFP vs gradient: with epsilon -> 0 every rule is gradient x input, so F(p) = -|p| * N * dL_mean/dp
        # (float64 values; exact up to rounding for LFP-0, off by O(epsilon / |z|) for LFP-epsilon)
        worst = 0.0
        for k, f in res["feedback"].items():
            g, p = res["gradient"][k], res["model"].get_parameter(k)
            worst = max(worst, ((f + p.abs() * N * g).abs().max() / max(1.0, f.abs().max().item())).item())
        print(f"   feedback vs -|p|*N*gradient: max diff / max(1, max|feedback|) = {worst:.3g}")
        if eps == LFP0:
            ok &= worst < 1e-12

        # float32 run of the same step: the float32 noise floor against this float64 reference
        r32, _ = build_file(model, x, labels, train, eps, dtype=torch.float32)
        worst32, where = fs.float32_worst(r32, tensors, skip=("state.", "running."))
        print(f"   float32 reference run vs this file: worst relative diff {worst32:.3g} ({where})")
        ok &= worst32 < 1e-5
    if not ok:
        sys.exit("a check failed (see above)")


if __name__ == "__main__":
    main()
