"""Golden fixtures: the reference LFP (lfprop 1.0.0, propagator_vit.LFPEpsilonComposite) on a tiny ViT.

    .reference-venv/bin/python scripts/reference/vit_fixtures.py OUTDIR

Writes OUTDIR/vit_eval.safetensors (meant for Tests/LFPTests/Conformance/models) and prints the largest |value|
of every stored tensor, numerical checks of the formulas in scripts/reference/VIT-NOTES.md (each rule recomputed
by hand from hooked inputs and compared with lfprop), and cross-checks against other ways of running the
reference. Deterministic: fixed seed, one thread; two runs write byte-identical files.

Model (`TinyViT`): timm's `VisionTransformer` layout, state_dict names and forward (timm is not installed in the
venv, so the modules are written here, copying timm/models/vision_transformer.py `Block`, `_pos_embed`,
`forward_features`, `forward_head` and timm/layers `Attention` (non-fused path), `Mlp`, `PatchEmbed`), with
the Identity/Dropout modules timm has at the same places (they carry no parameters):

    input                                   [N=3, 3, 8, 8]
    patch_embed.proj   Conv2d(3, 8, 4, stride 4) ; flatten(2).transpose(1, 2)    -> [N, T=4, D=8]
    cat(cls_token.expand(N, -1, -1), x) ; + pos_embed ; pos_drop (Dropout 0)     -> [N, 5, 8]
    blocks.{0,1}  (pre-norm, timm `Block`):
        x = x + attn(norm1(x))          norm1 LayerNorm(8, eps 1e-6)
            attn: qkv Linear(8, 24) -> reshape(N, 5, 3, heads=2, 4).permute(2, 0, 3, 1, 4) -> q, k, v
                  q = q * 4**-0.5 ; scores = q @ k^T ; softmax(-1) ; attn_drop (Dropout 0) ; @ v
                  transpose(1, 2).reshape(N, 5, 8) ; norm (Identity) ; proj Linear(8, 8)
        x = x + mlp(norm2(x))           norm2 LayerNorm ; mlp: fc1 Linear(8, 32), act nn.GELU (erf), fc2 Linear(32, 8)
    norm LayerNorm(8, eps 1e-6) ; x[:, 0] (class-token pooling) ; fc_norm (Identity) ; head Linear(8, 10)

Parameters: Conv/Linear PyTorch default init; LayerNorm |weight| in [0.5, 1.5] with a random sign (negative with
probability 0.25), bias uniform in [-0.5, 0.5]; cls_token and pos_embed N(0, 0.5^2). Input N(0, 1), labels
uniform in 0..9.

Feedback: `propagator_vit.LFPEpsilonComposite()` (its default epsilon = 1) with `rewards.SoftmaxLossReward`,
entered the way lfprop's own ViT trainer enters it: `composite.context(model, dummy_inputs=...)`. The
composite's function rules (operator.add/matmul/truediv, F.softmax) need a torch.fx trace; lxt imports
`transformers.utils.fx.HFTracer` for it, which transformers 5.x no longer has (lfp_compat stubs it), so this
script hands `register` a plain torch.fx tracer (`FxTracer`) and a `get_concrete_args`. The traced
GraphModule is thrown away by lfprop (ParameterizableComposite.register returns None and
DummyCompositeContext.__enter__ returns the original module), so only the module rules act; checked below
by running the composite again without any function rules (identical results) and the HF layout.

File vit_eval.safetensors (float32 unless noted; computed in float64, then rounded):
  state.<name>               every state_dict entry (timm names) of the model
  input [3,3,8,8], labels int64 [3], logits [3,10], reward [3,10]
  feedback.<param>           p.feedback for every parameter that gets one: all except cls_token and pos_embed,
                             which no rule owns (they get none); summed over batch and tokens
  gradient.<param>           d/dp of F.cross_entropy(logits, labels) (batch mean), plain autograd on a fresh
                             copy, for every parameter (cls_token and pos_embed included)
  input_feedback [3,3,8,8]   feedback arriving at the input image
  layer_feedback.<point>     feedback arriving at (the output of) these points:
      patch_embed.proj [3,8,2,2]         conv output (NCHW, before flatten)
      pos_drop [3,5,8]                   embeddings after + pos_embed (= input of blocks.0)
      blocks.i.norm1 [3,5,8]             LayerNorm output (= what qkv's rule sends back)
      blocks.i.attn.qkv [3,5,24]         qkv Linear output (q | k | v, heads in order)
      blocks.i.attn.scores [3,2,5,5]     q*scale @ k^T, the softmax input (not a module: a tap in forward)
      blocks.i.attn.attn_drop [3,2,5,5]  softmax output (timm's Dropout right after the softmax)
      blocks.i.attn.norm [3,5,8]         heads merged (input of proj)
      blocks.i.attn.proj [3,5,8]         attention branch output
      blocks.i.residual1 [3,5,8]         x + attn(...) (not a module: a tap in forward)
      blocks.i.norm2, blocks.i.mlp.fc1 [3,5,32] (= GELU output's, identity), blocks.i.mlp.fc2, blocks.i (block output)
      norm [3,5,8]                       final LayerNorm output (zero except token 0)
      fc_norm [3,8]                      pooled class token (= head's input)
safetensors metadata: one key, "description".
"""
import contextlib
import copy
import hashlib
import inspect
import pathlib
import sys
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # lfp_compat.py: lxt 0.6 -> lxt 2.1 import shim
import lfp_compat  # noqa: E402,F401  (must come before lfprop.propagation)
import fixture_support as fs  # noqa: E402
from lfprop.propagation import propagator_lxt, propagator_vit  # noqa: E402
from lfprop.rewards import reward_functions as rewards  # noqa: E402
from lxt import core as lcore  # noqa: E402  (= lxt.explicit.core)
from lxt import functional as lfunctional  # noqa: E402
from lxt import rules as lrules  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

# lxt's Composite.remove() warns whenever its (discarded) trace replaced functions; the script prints them itself
warnings.filterwarnings("ignore", message="Some functions have been replaced by tracing")

SEED = 20240611
N, IMG, PATCH, IN_CH = 3, 8, 4, 3
DIM, HEADS, DEPTH, MLP_RATIO, NUM_CLASSES = 8, 2, 2, 4, 10
TOKENS = (IMG // PATCH) ** 2  # 4 patch tokens (+ 1 class token)
LN_EPS = 1e-6
EPSILON = 1.0  # propagator_vit.LFPEpsilonComposite's default (propagator_vit.py:161)


# ----------------------------------------------------------------------------------------------------------
# The model: timm layout (module names = timm's, so state_dict names = timm's)


class _Tapped(nn.Module):
    """`_probe(name, tensor)` records non-module points (None outside the recorded LFP forward)."""
    _probe = None
    _qualname = ""

    def _tap(self, what, t):
        if self._probe is not None:
            self._probe(f"{self._qualname}.{what}", t)
        return t


class PatchEmbed(nn.Module):  # timm/layers/patch_embed.py, flatten=True, no norm
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(IN_CH, DIM, kernel_size=PATCH, stride=PATCH)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))  # NCHW -> NLC


class Attention(_Tapped):  # timm/layers/attention.py `Attention`, fused_attn=False path
    def __init__(self):
        super().__init__()
        self.num_heads = HEADS
        self.head_dim = DIM // HEADS
        self.attn_dim = DIM
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=True)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.proj = nn.Linear(DIM, DIM, bias=True)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = self._tap("scores", q @ k.transpose(-2, -1))
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B, T, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        return self.proj_drop(x)


class Mlp(nn.Module):  # timm/layers/mlp.py `Mlp`
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(DIM, MLP_RATIO * DIM)
        self.act = nn.GELU()  # exact (erf)
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(MLP_RATIO * DIM, DIM)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class Block(_Tapped):  # timm/models/vision_transformer.py `Block` (pre-norm), no LayerScale, no drop path
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM, eps=LN_EPS)
        self.attn = Attention()
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(DIM, eps=LN_EPS)
        self.mlp = Mlp()
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x):
        x = self._tap("residual1", x + self.drop_path1(self.ls1(self.attn(self.norm1(x)))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class TinyViT(nn.Module):  # timm VisionTransformer(class_token=True, global_pool='token', pos_embed='learn')
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TOKENS, DIM))
        self.pos_drop = nn.Dropout(0.0)
        self.patch_drop = nn.Identity()
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[Block() for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(DIM, eps=LN_EPS)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(DIM, NUM_CLASSES)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # _pos_embed: concat, then add
        x = self.pos_drop(x + self.pos_embed)
        x = self.norm_pre(self.patch_drop(x))
        x = self.blocks(x)
        x = self.norm(x)
        x = x[:, 0]  # global_pool == 'token'
        x = self.fc_norm(x)
        return self.head(self.head_drop(x))


def attach_probe(model, probe):
    for name, mod in model.named_modules():
        if isinstance(mod, _Tapped):
            mod._probe, mod._qualname = probe, name


def make_model_and_batch():
    torch.manual_seed(SEED)
    model = TinyViT()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                sign = torch.where(torch.rand(DIM) < 0.25, -1.0, 1.0)
                m.weight.copy_(sign * (0.5 + torch.rand(DIM)))
                m.bias.copy_(torch.rand(DIM) - 0.5)
        model.cls_token.copy_(0.5 * torch.randn(1, 1, DIM))
        model.pos_embed.copy_(0.5 * torch.randn(1, 1 + TOKENS, DIM))
    x = torch.randn(N, IN_CH, IMG, IMG)
    labels = torch.randint(0, NUM_CLASSES, (N,), dtype=torch.int64)
    return model.eval(), x, labels


# ----------------------------------------------------------------------------------------------------------
# Entering the composite as lfprop's trainer does, with a torch.fx tracer in place of the missing HFTracer


class FxTracer(torch.fx.Tracer):
    """torch.fx tracer with HFTracer's call signature; lxt's rule wrappers are leaves (they are opaque
    autograd Functions)."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, lrules.WrapModule) or super().is_leaf_module(m, qualname)

    def trace(self, root, concrete_args=None, dummy_inputs=None):
        return super().trace(root, concrete_args=concrete_args)


def _get_concrete_args(model, input_names):  # as transformers.utils.fx.get_concrete_args (4.x)
    sig = inspect.signature(model.forward)
    return {p.name: p.default for p in sig.parameters.values() if p.name not in input_names}


@contextlib.contextmanager
def fx_available():
    saved = lcore.get_concrete_args
    lcore.get_concrete_args = _get_concrete_args
    try:
        yield
    finally:
        lcore.get_concrete_args = saved


FUNCTION_KEYS = ("add", "truediv", "matmul", "softmax")


def enter(composite, m, x, how):
    """Context manager yielding the model to run. how:
    'context'  : composite.context(m, dummy_inputs=..., tracer=FxTracer)   (lfprop's ViT trainer; the fixture)
    'modules'  : the same composite with its four function rules deleted from layer_map (no trace at all)
    'skiptrace': composite.context(m, dummy_inputs=...) with _iterate_graph replaced by the identity (HF model)
    """
    if how == "context":
        return composite.context(m, dummy_inputs={"x": x[:1]}, tracer=FxTracer)
    if how == "modules":
        for key in [k for k in composite.layer_map if getattr(k, "__name__", "") in FUNCTION_KEYS]:
            del composite.layer_map[key]
        assert len(composite.layer_map) == 7, composite.layer_map
        return composite.context(m)
    if how == "skiptrace":
        composite._iterate_graph = lambda model, *a, **k: model
        return composite.context(m, dummy_inputs={"pixel_values": x[:1]})
    raise ValueError(how)


# ----------------------------------------------------------------------------------------------------------
# One LFP step as the reference README does it, plus hooks that record what every rule saw

RECORDED_PLAIN = ("pos_drop", "fc_norm")  # non-rule modules whose output feedback is recorded
RECORDED_PLAIN_BLOCK = ("attn.attn_drop", "attn.norm")


def _recorder(trace, name, with_inputs=True):
    def hook(module, inputs, output):
        record(trace, name, output, [i.detach() for i in inputs] if with_inputs else None)
    return hook


def record(trace, name, output, inputs=None):
    call = {"inputs": inputs, "output": output.detach()}
    assert name not in trace, f"{name} called twice"
    trace[name] = call
    if output.requires_grad:
        output.register_hook(lambda g: call.__setitem__("grad_out", g.detach()))


def lfp_step(model, x, labels, dtype, how="context", train=False):
    m = copy.deepcopy(model).to(dtype)
    m.train(train)
    x = x.to(dtype)
    trace = {}
    composite = propagator_vit.LFPEpsilonComposite()  # epsilon = 1 (default)
    returned = []  # what register() hands back (lxt's would be the traced GraphModule)
    register = composite.register
    composite.register = lambda *a, **k: returned.append(register(*a, **k))
    with fx_available(), enter(composite, m, x, how) as modified:
        assert modified is m  # DummyCompositeContext.__enter__ returns the module itself
        assert returned == [None]  # ParameterizableComposite.register drops lxt's traced module
        wrappers = {n: mod for n, mod in modified.named_modules()
                    if isinstance(mod, (propagator_lxt.LFPEpsilon, lrules.IdentityRule))}
        assert all(w.epsilon == EPSILON for w in wrappers.values() if isinstance(w, propagator_lxt.LFPEpsilon))
        hooks = [mod.register_forward_hook(_recorder(trace, n)) for n, mod in wrappers.items()]
        mods = dict(modified.named_modules())
        plain = list(RECORDED_PLAIN) + [f"blocks.{i}.{p}" for i in range(DEPTH) for p in RECORDED_PLAIN_BLOCK]
        plain += [f"blocks.{i}" for i in range(DEPTH)]
        hooks += [mods[n].register_forward_hook(_recorder(trace, n, with_inputs=False)) for n in plain]
        attach_probe(modified, lambda name, t: record(trace, name, t))
        inp = x.detach().requires_grad_(True)
        out = modified(inp)
        reward = rewards.SoftmaxLossReward(torch.device("cpu"))(out, labels).detach()
        (input_feedback,) = torch.autograd.grad((out,), (inp,), grad_outputs=(reward,))
        attach_probe(modified, None)
        for h in hooks:
            h.remove()
        summary = copy.copy(composite.function_summary)
    feedback = {n: p.feedback.detach().clone() for n, p in m.named_parameters()
                if getattr(p, "feedback", None) is not None}
    return dict(model=m, logits=out.detach(), reward=reward, input_feedback=input_feedback, labels=labels,
                feedback=feedback, trace=trace, function_summary=summary, wrappers=sorted(wrappers))


def gradient_step(model, x, labels, dtype):
    """Plain autograd gradient of the mean cross-entropy on a fresh copy (no composite)."""
    m = copy.deepcopy(model).to(dtype).eval()
    logits = m(x.to(dtype))
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), list(m.parameters()))
    return {n: g.detach() for (n, _), g in zip(m.named_parameters(), grads)}, logits.detach()


# ----------------------------------------------------------------------------------------------------------
# Hand re-computation of every rule from the recorded inputs (the formulas of VIT-NOTES.md)


def stab(z, eps=EPSILON):
    """zennit.core.stabilize(clip=False, norm_scale=False): z + eps * sign(z), sign(0) = +1."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def trace_accessors(tr, d):
    """What every verify() reads from a recorded trace: diff(key, a, b) keeps the largest max|a - b| per
    key in `d`; R, z, a: the feedback arriving at a module's output, its output, its first input."""
    def diff(key, a, b):
        d[key] = max(d.get(key, 0.0), (a - b).abs().max().item())

    def R(name):
        return tr[name]["grad_out"]

    def z(name):
        return tr[name]["output"]

    def a(name):
        return tr[name]["inputs"][0]

    return diff, R, z, a


def verify(res):
    """{check name: max abs difference} between the hand formulas and what lfprop produced."""
    m, tr, fb = res["model"], res["trace"], res["feedback"]
    mods = dict(m.named_modules())
    d = {}

    diff, R, z, a = trace_accessors(tr, d)

    def linear_rule(name):  # epsilon rule on nn.Linear applied to [N, T, I] (or [N, I])
        lin = mods[name]
        s = R(name) / stab(z(name))
        A = a(name)
        diff("linear forward", z(name), A @ lin.weight.T + lin.bias)
        s2, A2 = s.reshape(-1, s.shape[-1]), A.reshape(-1, A.shape[-1])  # sum over batch AND tokens
        diff("linear weight feedback  |W| * sum_{n,t} S^T A", fb[name + ".weight"], lin.weight.abs() * (s2.T @ A2))
        diff("linear bias feedback    |b| * sum_{n,t} S", fb[name + ".bias"], lin.bias.abs() * s2.sum(0))
        return A * (s @ lin.weight)

    def layernorm_rule(name):  # epsilon rule on the whole nn.LayerNorm (full backward, mean and var included)
        ln = mods[name]
        x = a(name)
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased
        sigma = torch.sqrt(var + LN_EPS)
        xhat = (x - mu) / sigma
        y = ln.weight * xhat + ln.bias
        diff("layernorm forward", z(name), y)
        s = R(name) / stab(y)
        diff("layernorm weight feedback  |g| * sum_{n,t} xhat S", fb[name + ".weight"],
             ln.weight.abs() * (xhat * s).sum((0, 1)))
        diff("layernorm bias feedback    |b| * sum_{n,t} S", fb[name + ".bias"], ln.bias.abs() * s.sum((0, 1)))
        g = ln.weight * s
        full = x * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)) / sigma
        # how much the simplifications would differ (reported, not checks)
        key = "layernorm input feedback: mu, sigma as constants would differ by"
        d[key] = max(d.get(key, 0.0), (full - x * g / sigma).abs().max().item())
        key = "layernorm input feedback: lxt layer_norm rule (sigma constant) would differ by"
        d[key] = max(d.get(key, 0.0), (full - x * (g - g.mean(-1, keepdim=True)) / sigma).abs().max().item())
        return full

    # reward = logits * (onehot - softmax(logits))
    y = res["logits"]
    onehot = F.one_hot(res["labels"], NUM_CLASSES).to(y)
    diff("reward", res["reward"], y * (onehot - torch.softmax(y, 1)))
    diff("feedback at the logits = reward", R("head"), res["reward"])

    # head on the class token, final norm
    share = linear_rule("head")
    diff("head input feedback = fc_norm output feedback", R("fc_norm"), share)
    tok0 = torch.zeros_like(R("norm"))
    tok0[:, 0] = share
    diff("final norm output feedback: token 0 = head share, others 0", R("norm"), tok0)
    stream = layernorm_rule("norm")  # feedback into the residual stream after the last block
    diff("last block output feedback = final norm input share", R(f"blocks.{DEPTH - 1}"), stream)

    for i in reversed(range(DEPTH)):
        b = f"blocks.{i}"
        # MLP branch: x = r1 + fc2(gelu(fc1(norm2(r1))))  -- the add is plain autograd: R copied to both
        diff("fc2 output feedback = block output feedback (add copies)", R(f"{b}.mlp.fc2"), R(b))
        fc2_in = linear_rule(f"{b}.mlp.fc2")
        diff("GELU: identity rule (output feedback = fc2 input share)", R(f"{b}.mlp.act"), fc2_in)
        diff("fc1 output feedback = GELU output feedback (identity)", R(f"{b}.mlp.fc1"), R(f"{b}.mlp.act"))
        fc1_in = linear_rule(f"{b}.mlp.fc1")
        diff("norm2 output feedback = fc1 input share", R(f"{b}.norm2"), fc1_in)
        n2_in = layernorm_rule(f"{b}.norm2")
        diff("residual1 feedback = block output feedback + norm2 input share", R(f"{b}.residual1"), R(b) + n2_in)

        # attention branch: x = x_in + proj(attention(qkv(norm1(x_in))))
        diff("attn.proj output feedback = residual1 feedback (add copies)", R(f"{b}.attn.proj"), R(f"{b}.residual1"))
        proj_in = linear_rule(f"{b}.attn.proj")
        diff("merged heads feedback = proj input share", R(f"{b}.attn.norm"), proj_in)
        attn = mods[f"{b}.attn"]
        qkv = z(f"{b}.attn.qkv").reshape(N, 1 + TOKENS, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        A = torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)
        diff("attention probabilities", z(f"{b}.attn.attn_drop"), A)
        Ro = R(f"{b}.attn.norm").reshape(N, 1 + TOKENS, HEADS, DIM // HEADS).transpose(1, 2)
        RA = Ro @ v.transpose(-2, -1)  # attn @ v: plain gradient (no rule)
        Rv = A.transpose(-2, -1) @ Ro
        diff("softmax output feedback = R_o v^T (gradient of attn @ v)", R(f"{b}.attn.attn_drop"), RA)
        Rs = A * (RA - (A * RA).sum(-1, keepdim=True))  # softmax: plain gradient (Jacobian^T R)
        diff("softmax input feedback = A * (R_A - sum_j A R_A) (softmax gradient)", R(f"{b}.attn.scores"), Rs)
        Rq = attn.scale * (Rs @ k)
        Rk = attn.scale * (Rs.transpose(-2, -1) @ q)
        Rqkv = torch.stack([Rq, Rk, Rv]).permute(1, 3, 0, 2, 4).reshape(N, 1 + TOKENS, 3 * DIM)
        diff("qkv output feedback = gradient through scores/softmax/attn@v", R(f"{b}.attn.qkv"), Rqkv)
        qkv_in = linear_rule(f"{b}.attn.qkv")
        diff("norm1 output feedback = qkv input share", R(f"{b}.norm1"), qkv_in)
        n1_in = layernorm_rule(f"{b}.norm1")
        block_in = R("pos_drop") if i == 0 else R(f"blocks.{i - 1}")
        diff("block input feedback = residual1 feedback + norm1 input share", block_in, R(f"{b}.residual1") + n1_in)

    # embeddings: cat(cls, patches) + pos_embed, both plain autograd; cls_token / pos_embed have no rule
    Rp = R("pos_drop")[:, 1:, :].transpose(1, 2).reshape(N, DIM, IMG // PATCH, IMG // PATCH)
    diff("patch conv output feedback = embedding feedback at tokens 1..T", R("patch_embed.proj"), Rp)
    conv = mods["patch_embed.proj"]
    xin, s = a("patch_embed.proj"), R("patch_embed.proj") / stab(z("patch_embed.proj"))
    kw = dict(stride=conv.stride, padding=conv.padding)
    diff("conv weight feedback", fb["patch_embed.proj.weight"],
         conv.weight.abs() * torch.nn.grad.conv2d_weight(xin, conv.weight.shape, s, **kw))
    diff("conv bias feedback", fb["patch_embed.proj.bias"], conv.bias.abs() * s.sum((0, 2, 3)))
    diff("input feedback = conv input share", res["input_feedback"],
         xin * torch.nn.grad.conv2d_input(xin.shape, conv.weight, s, **kw))
    return d


def check_lxt_function_rules(dtype=torch.float64):
    """lxt's AttnLRP function rules (NOT active in the reference step), recomputed on random tensors."""
    torch.manual_seed(1)
    d = {}
    a = torch.randn(2, 3, 5, 4, dtype=dtype, requires_grad=True)
    b = torch.randn(2, 3, 4, 6, dtype=dtype, requires_grad=True)
    r = torch.randn(2, 3, 5, 6, dtype=dtype)
    ra, rb = torch.autograd.grad(lfunctional.matmul(a, b), (a, b), r)  # default epsilon 1e-8
    s = r / (2 * (a @ b) + 1e-8)
    d["lxt matmul: R_a = a * (S b^T), R_b = b * (a^T S), S = R / (2 z + eps)"] = max(
        (ra - a * (s @ b.transpose(-1, -2))).abs().max().item(),
        (rb - b * (a.transpose(-1, -2) @ s)).abs().max().item())
    x = torch.randn(2, 3, 5, 5, dtype=dtype, requires_grad=True)
    r = torch.randn(2, 3, 5, 5, dtype=dtype)
    (rx,) = torch.autograd.grad(lfunctional.softmax(x, -1), (x,), r)
    p = torch.softmax(x, -1)
    d["lxt softmax: R_x = x * (R - p * sum_j R)"] = (rx - x * (r - p * r.sum(-1, keepdim=True))).abs().max().item()
    u = torch.randn(2, 5, 8, dtype=dtype, requires_grad=True)
    w = torch.randn(2, 5, 8, dtype=dtype, requires_grad=True)
    r = torch.randn(2, 5, 8, dtype=dtype)
    ru, rw = torch.autograd.grad(lfunctional.add2(u, w), (u, w), r)  # default epsilon 1e-8, NOT sign-stabilised
    s = r / (u + w + 1e-8)
    d["lxt add2: R_u = u * R / (u + w + eps), same for w"] = max((ru - u * s).abs().max().item(),
                                                                  (rw - w * s).abs().max().item())
    (ru,) = torch.autograd.grad(propagator_vit.div2_fn.apply(u, 2.0), (u,), r)
    d["div2_fn: one tensor operand: R passes unchanged"] = (ru - r).abs().max().item()
    ru, rw = torch.autograd.grad(propagator_vit.div2_fn.apply(u, w + 3), (u, w), r)
    d["div2_fn: two tensor operands: R / 2 to each"] = max((ru - r / 2).abs().max().item(),
                                                           (rw - r / 2).abs().max().item())
    return d


# ----------------------------------------------------------------------------------------------------------
# Cross-checks: the same step on HF's ViTForImageClassification (the model lfprop's trainer uses)


def hf_model_from(model):
    """transformers 5.x ViTForImageClassification (eager attention, as lfprop.model.models.get_model) holding the
    same weights; returns (hf model, {hf name: timm name or (timm name, chunk index)})."""
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(image_size=IMG, patch_size=PATCH, num_channels=IN_CH, hidden_size=DIM, num_hidden_layers=DEPTH,
                    num_attention_heads=HEADS, intermediate_size=MLP_RATIO * DIM, hidden_act="gelu",
                    layer_norm_eps=LN_EPS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    qkv_bias=True, num_labels=NUM_CLASSES)
    cfg._attn_implementation = "eager"
    hf = ViTForImageClassification(cfg).eval()
    names = {"vit.embeddings.cls_token": "cls_token", "vit.embeddings.position_embeddings": "pos_embed",
             "vit.layernorm.weight": "norm.weight", "vit.layernorm.bias": "norm.bias",
             "classifier.weight": "head.weight", "classifier.bias": "head.bias"}
    for p in ("weight", "bias"):
        names[f"vit.embeddings.patch_embeddings.projection.{p}"] = f"patch_embed.proj.{p}"
        for i in range(DEPTH):
            h, t = f"vit.layers.{i}", f"blocks.{i}"
            names.update({f"{h}.layernorm_before.{p}": f"{t}.norm1.{p}", f"{h}.layernorm_after.{p}": f"{t}.norm2.{p}",
                          f"{h}.attention.o_proj.{p}": f"{t}.attn.proj.{p}",
                          f"{h}.mlp.fc1.{p}": f"{t}.mlp.fc1.{p}", f"{h}.mlp.fc2.{p}": f"{t}.mlp.fc2.{p}"})
            for c, qkv in enumerate(("q_proj", "k_proj", "v_proj")):
                names[f"{h}.attention.{qkv}.{p}"] = (f"{t}.attn.qkv.{p}", c)
    sd = model.state_dict()
    hf_sd = {h: (sd[t] if isinstance(t, str) else sd[t[0]].chunk(3, 0)[t[1]]).clone() for h, t in names.items()}
    hf.load_state_dict(hf_sd, strict=True)
    return hf, names


def hf_step(model, x, labels, dtype):
    hf, names = hf_model_from(model)
    hf = hf.to(dtype)
    composite = propagator_vit.LFPEpsilonComposite()
    xx = x.to(dtype)
    with enter(composite, hf, xx, "skiptrace") as modified:
        inp = xx.detach().requires_grad_(True)
        out = modified(pixel_values=inp)["logits"]  # lfprop.model.models.forward_fn_vit
        reward = rewards.SoftmaxLossReward(torch.device("cpu"))(out, labels).detach()
        (input_feedback,) = torch.autograd.grad((out,), (inp,), grad_outputs=(reward,))
    fb = {n: p.feedback.detach() for n, p in hf.named_parameters() if getattr(p, "feedback", None) is not None}
    timm_fb = {}
    for h, t in names.items():
        if h in fb:
            if isinstance(t, str):
                timm_fb[t] = fb[h]
            else:
                timm_fb.setdefault(t[0], [None] * 3)[t[1]] = fb[h]
    timm_fb = {k: (torch.cat(v, 0) if isinstance(v, list) else v) for k, v in timm_fb.items()}
    return dict(logits=out.detach(), input_feedback=input_feedback, feedback=timm_fb,
                no_feedback=sorted(set(names) - set(fb)))


def traced_step(model, x, labels, dtype):
    """What the traced GraphModule (that lfprop discards) would give: lxt's add2/matmul rules active."""
    m = copy.deepcopy(model).to(dtype).eval()
    xx = x.to(dtype)
    composite = propagator_vit.LFPEpsilonComposite()
    with fx_available():
        composite._canonize_inplace_activations(m)
        gm = lcore.Composite.register(composite, m, {"x": xx[:1]}, FxTracer, False, False)  # lxt's return value
    inp = xx.detach().requires_grad_(True)
    out = gm(inp)
    reward = rewards.SoftmaxLossReward(torch.device("cpu"))(out, labels).detach()
    (input_feedback,) = torch.autograd.grad((out,), (inp,), grad_outputs=(reward,))
    composite.remove()
    fb = {n: p.feedback.detach() for n, p in m.named_parameters() if getattr(p, "feedback", None) is not None}
    replaced = sorted({str(getattr(n.target, "__name__", n.target)) for n in gm.graph.nodes
                       if n.op == "call_function"
                       and getattr(n.target, "__module__", "").startswith(("lxt", "lfprop"))})
    return dict(logits=out.detach(), input_feedback=input_feedback, feedback=fb, replaced=replaced)


# ----------------------------------------------------------------------------------------------------------


def build_file(model, x, labels, dtype=torch.float64):
    res = lfp_step(model, x, labels, dtype)
    grads, plain_logits = gradient_step(model, x, labels, dtype)
    res["gradient"], res["plain_logits"] = grads, plain_logits
    t = {f"state.{k}": v.clone() for k, v in model.state_dict().items()}
    t.update(input=x, labels=labels, logits=res["logits"], reward=res["reward"], input_feedback=res["input_feedback"])
    t.update({f"feedback.{k}": v for k, v in res["feedback"].items()})
    t.update({f"gradient.{k}": v for k, v in grads.items()})
    skip = {"head"} | {f"blocks.{i}.mlp.act" for i in range(DEPTH)}  # = reward / = blocks.i.mlp.fc1's
    for name, call in res["trace"].items():
        if name not in skip:
            t[f"layer_feedback.{name}"] = call["grad_out"]
    return fs.file_tensors(t), res


def main():
    outdir = fs.output_dir(__doc__)
    model, x, labels = make_model_and_batch()
    ok = True

    tensors, res = build_file(model, x, labels)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"non-finite tensors {bad}"
    meta = {"description": f"rule=epsilon epsilon={EPSILON!r} mode=eval reward=softmax seed={SEED}; lfprop 1.0.0 "
                           "propagator_vit.LFPEpsilonComposite() (module rules only: the composite's function rules "
                           "live in a traced graph that lfprop discards); timm VisionTransformer layout; computed "
                           "in float64, stored float32"}
    path = outdir / "vit_eval.safetensors"
    save_file(tensors, str(path), metadata=meta)
    print(f"== {path.name}  ({path.stat().st_size} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})")
    print(f"   rule wrappers: {res['wrappers']}")
    replaced = {str(mod): sorted(str(getattr(f, '__name__', f)) for f, how in fns.items() if how == 'replaced')
                for mod, fns in res["function_summary"].items()}
    print(f"   functions replaced in the traced graph that lfprop discards: "
          f"{ {k: v for k, v in replaced.items() if v} }")
    no_fb = sorted(n for n, _ in res["model"].named_parameters() if n not in res["feedback"])
    print(f"   parameters without feedback: {no_fb}")
    ok &= no_fb == ["cls_token", "pos_embed"]
    for k in sorted(tensors):
        if tensors[k].is_floating_point() and not k.startswith("state."):
            print(f"   max|{k}| = {tensors[k].abs().max().item():.4g}")

    zs = [c["output"] for n, c in res["trace"].items() if n in res["wrappers"]]
    print(f"   rule outputs exactly 0: {sum(int((o == 0).sum()) for o in zs)}; "
          f"smallest |z| at a rule output {min(o.abs().min().item() for o in zs):.3g} (epsilon {EPSILON})")

    d = verify(res)
    d["composite forward logits = plain model logits"] = (res["logits"] - res["plain_logits"]).abs().max().item()
    d.update(check_lxt_function_rules())
    for key, v in d.items():
        print(f"   check {key}: max abs diff {v:.3g}")
        if "would differ" not in key and v > 1e-12:
            ok = False

    # the traced graph is discarded: the composite without any function rules gives identical results
    res_mod = lfp_step(model, x, labels, torch.float64, how="modules")
    same = (res_mod["feedback"].keys() == res["feedback"].keys()
            and all(torch.equal(res_mod["feedback"][k], v) for k, v in res["feedback"].items())
            and torch.equal(res_mod["input_feedback"], res["input_feedback"]))
    print(f"   composite without function rules (no trace): identical bitwise: {same}")
    ok &= same
    res_train = lfp_step(model, x, labels, torch.float64, train=True)
    same = all(torch.equal(res_train["feedback"][k], v) for k, v in res["feedback"].items())
    print(f"   train mode (lfprop's trainer calls model.train()): identical bitwise: {same}")
    ok &= same

    # HF layout (lfprop's own ViT): same weights, same step; HF's eager softmax runs in float32 even in float64
    hf = hf_step(model, x, labels, torch.float64)
    print(f"   HF ViTForImageClassification parameters without feedback: {hf['no_feedback']}")
    e_fb, where = fs.max_rel(hf["feedback"], res["feedback"])
    e_in = ((hf["input_feedback"] - res["input_feedback"]).abs().max()).item()
    e_lg = ((hf["logits"] - res["logits"]).abs().max()).item()
    print(f"   HF layout vs this file (float64 runs): logits {e_lg:.3g}, input feedback {e_in:.3g}, "
          f"feedback worst diff/max|ref| {e_fb:.3g} ({where}); "
          f"feedback keys equal: {hf['feedback'].keys() == res['feedback'].keys()}")
    ok &= e_fb < 1e-6 and hf["feedback"].keys() == res["feedback"].keys()

    # what lxt's function rules would have changed, had lfprop used the traced graph
    tr = traced_step(model, x, labels, torch.float64)
    e_fb, where = fs.max_rel(tr["feedback"], res["feedback"])
    print(f"   traced graph (lxt rules on {tr['replaced']}) vs this file: "
          f"feedback worst diff/max|ref| {e_fb:.3g} ({where}), "
          f"input feedback {(tr['input_feedback'] - res['input_feedback']).abs().max().item():.3g} "
          f"(max|input feedback| {res['input_feedback'].abs().max().item():.3g})")

    # float32 run of the same step: the float32 noise floor against this float64 reference
    r32, _ = build_file(model, x, labels, dtype=torch.float32)
    worst32, where = fs.float32_worst(r32, tensors)
    worst32t, wheret = fs.float32_worst(r32, tensors, unit_floor=False)
    print(f"   float32 reference run vs this file: worst diff / max(1, max|ref|) {worst32:.3g} ({where}); "
          f"worst diff / max|ref| {worst32t:.3g} ({wheret})")
    ok &= worst32 < 1e-5
    if not ok:
        sys.exit("a check failed (see above)")


if __name__ == "__main__":
    main()
