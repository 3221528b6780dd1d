// Imported TorchScript models: site discovery on the inlined forward graph, segmentation of the
// graph into one quell node per site, and a small interpreter that runs a segment.
//
// The forward graph is inlined and in-place ops are made functional where that is safe. Sites
// are the input, the outputs of the ops in site_kinds() at the top level of the graph, values
// that several sites read and that are not cheap to recompute (a site of their own, so every
// op runs once per pass), and the output. Each site's node runs the top-level ops its value
// needs, pulled back from the site op to earlier sites; cheap pure ops (constants, attribute
// reads, shape arithmetic, views) are recomputed by each node that needs them. Ops with side
// effects (BatchNorm's counter, input checks) run in the node of the next site.
#include "quell/script.h"

#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/csrc/jit/runtime/operator.h>
#include <torch/script.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "model/fused.h"
#include "model/internal.h"
#include "util/zip.h"

namespace quell {

namespace jit = torch::jit;

// ---------------------------------------------------------------------------------------------
// The interpreter: a segment compiled to instructions over value slots.

struct Instr;

struct Block {
  std::vector<Instr> code;
  std::vector<int> params;   ///< block inputs (a loop's iteration number and carried values)
  std::vector<int> returns;  ///< block outputs
};

struct Instr {
  enum class Kind {
    kOp,
    kConstant,
    kGetAttr,
    kSetAttr,
    kIf,
    kLoop,
    kIdentity,
    kNone,
    kListConstruct,
    kTupleConstruct,
    kUnpack,  // ListUnpack / TupleUnpack
    kTupleIndex
  };
  Kind kind = Kind::kOp;
  mutable jit::Operation op{nullptr};  // stateless: callable from several threads at once
  c10::IValue constant;
  c10::TypePtr element_type;  // kListConstruct
  size_t attr_slot = 0;
  std::vector<int> in, out;
  std::vector<Block> blocks;
};

struct ScriptOp {
  int num_slots = 0;
  std::vector<Instr> code;
  std::vector<std::pair<int, int>> site_inputs;  ///< (slot, quell node index)
  bool clone_inputs = false;  ///< an in-place op remains: do not let it write a site's value
  int self_slot = -1;
  int result_slot = -1;
  c10::IValue self;
  std::string where;            ///< the site's name, for error messages
  std::vector<int> op_inputs;   ///< slots of the site op's tensor inputs
  mutable bool record_inputs = false;  ///< set during the import's shape pass only
  mutable std::vector<std::vector<int64_t>> input_shapes;
};

namespace {

std::string first_line(const std::string& text) {
  // The first line with text: torch::jit::ErrorReport's message starts with a newline.
  const auto begin = text.find_first_not_of(" \n");
  const std::string s = begin == std::string::npos ? std::string() : text.substr(begin);
  const auto end = s.find('\n');
  std::string line = s.substr(0, end);
  while (!line.empty() && (line.back() == ' ' || line.back() == '.')) line.pop_back();
  return line;
}

void run_code(const std::vector<Instr>& code, std::vector<c10::IValue>& env) {
  jit::Stack stack;
  for (const Instr& ins : code) {
    switch (ins.kind) {
      case Instr::Kind::kConstant:
        env[ins.out[0]] = ins.constant;
        break;
      case Instr::Kind::kGetAttr:
        env[ins.out[0]] = env[ins.in[0]].toObjectRef().getSlot(ins.attr_slot);
        break;
      case Instr::Kind::kSetAttr:
        env[ins.in[0]].toObjectRef().setSlot(ins.attr_slot, env[ins.in[1]]);
        break;
      case Instr::Kind::kIdentity:
        env[ins.out[0]] = env[ins.in[0]];
        break;
      case Instr::Kind::kNone:
        env[ins.out[0]] = c10::IValue();
        break;
      case Instr::Kind::kListConstruct: {
        c10::impl::GenericList list(ins.element_type);
        list.reserve(ins.in.size());
        for (int i : ins.in) list.push_back(env[i]);
        env[ins.out[0]] = c10::IValue(std::move(list));
        break;
      }
      case Instr::Kind::kTupleConstruct: {
        std::vector<c10::IValue> items;
        items.reserve(ins.in.size());
        for (int i : ins.in) items.push_back(env[i]);
        env[ins.out[0]] = c10::ivalue::Tuple::create(std::move(items));
        break;
      }
      case Instr::Kind::kUnpack: {
        const c10::IValue& v = env[ins.in[0]];
        if (v.isTuple()) {
          const auto& items = v.toTupleRef().elements();
          TORCH_CHECK(items.size() == ins.out.size(), "cannot unpack ", items.size(),
                      " values into ", ins.out.size());
          for (size_t k = 0; k < ins.out.size(); ++k) env[ins.out[k]] = items[k];
        } else {
          const auto items = v.toListRef();
          TORCH_CHECK(items.size() == ins.out.size(), "cannot unpack ", items.size(),
                      " values into ", ins.out.size());
          for (size_t k = 0; k < ins.out.size(); ++k) env[ins.out[k]] = items[k];
        }
        break;
      }
      case Instr::Kind::kTupleIndex: {
        const auto& items = env[ins.in[0]].toTupleRef().elements();
        int64_t i = env[ins.in[1]].toInt();
        if (i < 0) i += static_cast<int64_t>(items.size());
        TORCH_CHECK(i >= 0 && i < static_cast<int64_t>(items.size()), "tuple index out of range");
        env[ins.out[0]] = items[static_cast<size_t>(i)];
        break;
      }
      case Instr::Kind::kIf: {
        const Block& b = ins.blocks[env[ins.in[0]].toBool() ? 0 : 1];
        run_code(b.code, env);
        for (size_t k = 0; k < ins.out.size(); ++k) env[ins.out[k]] = env[b.returns[k]];
        break;
      }
      case Instr::Kind::kLoop: {
        const Block& b = ins.blocks[0];
        const int64_t trips = env[ins.in[0]].toInt();
        bool go = env[ins.in[1]].toBool();
        std::vector<c10::IValue> carried;
        for (size_t k = 2; k < ins.in.size(); ++k) carried.push_back(env[ins.in[k]]);
        for (int64_t i = 0; go && i < trips; ++i) {
          env[b.params[0]] = i;
          for (size_t k = 0; k < carried.size(); ++k) env[b.params[k + 1]] = carried[k];
          run_code(b.code, env);
          go = env[b.returns[0]].toBool();
          for (size_t k = 0; k < carried.size(); ++k) carried[k] = env[b.returns[k + 1]];
        }
        for (size_t k = 0; k < ins.out.size(); ++k) env[ins.out[k]] = carried[k];
        break;
      }
      case Instr::Kind::kOp: {
        stack.clear();
        for (int i : ins.in) stack.push_back(env[i]);
        ins.op(stack);
        TORCH_INTERNAL_ASSERT(stack.size() == ins.out.size(), "op left ", stack.size(),
                              " values for ", ins.out.size(), " outputs");
        for (size_t k = 0; k < ins.out.size(); ++k) env[ins.out[k]] = std::move(stack[k]);
        break;
      }
    }
  }
}

// aten::max_pool2d through quell's max_pool_2d (models.h), several times faster on CPU for the
// common kernel == stride case, the same values.
void max_pool2d_op(jit::Stack& stack) {
  const size_t n = stack.size();
  const bool ceil_mode = stack[n - 1].toBool();
  const std::vector<int64_t> dilation = stack[n - 2].toIntVector();
  const std::vector<int64_t> padding = stack[n - 3].toIntVector();
  std::vector<int64_t> stride = stack[n - 4].toIntVector();
  const std::vector<int64_t> kernel = stack[n - 5].toIntVector();
  const torch::Tensor x = stack[n - 6].toTensor();
  stack.resize(n - 6);
  if (stride.empty()) stride = kernel;
  auto all = [](const std::vector<int64_t>& v, int64_t value) {
    return std::all_of(v.begin(), v.end(), [&](int64_t e) { return e == value; });
  };
  const bool simple = kernel.size() == 2 && kernel[0] == kernel[1] && stride == kernel &&
                      all(padding, 0) && all(dilation, 1) && !ceil_mode;
  stack.emplace_back(simple ? max_pool_2d(x, kernel[0], kernel[0])
                            : torch::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode));
}

// aten::conv2d (int-list padding) through quell's direct kernel where it applies (models.h
// conv2d: inference with at most 4 input channels), as the built-in models run it, so an
// imported model and the built-in one with the same weights give the same values.
void conv2d_op(jit::Stack& stack) {
  const size_t n = stack.size();
  const int64_t groups = stack[n - 1].toInt();
  const std::vector<int64_t> dilation = stack[n - 2].toIntVector();
  const std::vector<int64_t> padding = stack[n - 3].toIntVector();
  const std::vector<int64_t> stride = stack[n - 4].toIntVector();
  const torch::Tensor bias = stack[n - 5].isNone() ? torch::Tensor() : stack[n - 5].toTensor();
  const torch::Tensor weight = stack[n - 6].toTensor();
  const torch::Tensor x = stack[n - 7].toTensor();
  stack.resize(n - 7);
  if (detail::direct_conv_applies(x, weight, bias, stride, padding, dilation, groups)) {
    stack.emplace_back(detail::direct_conv2d(x, weight, bias, padding[0]));
  } else {
    stack.emplace_back(torch::conv2d(x, weight, bias, stride, padding, dilation, groups));
  }
}

// Compiles graph nodes to instructions, giving every value a slot.
class Compiler {
 public:
  explicit Compiler(std::string source) : source_(std::move(source)) {}

  int slot(const jit::Value* v) {
    const auto it = slots_.find(v);
    if (it != slots_.end()) return it->second;
    return slots_[v] = next_++;
  }
  int num_slots() const { return next_; }

  Instr compile(const jit::Node* n) {
    Instr ins;
    for (const jit::Value* v : n->inputs()) ins.in.push_back(slot(v));
    for (const jit::Value* v : n->outputs()) ins.out.push_back(slot(v));
    const jit::NodeKind k = n->kind();
    if (k == c10::prim::Constant) {
      ins.kind = Instr::Kind::kConstant;
      const auto value = jit::toIValue(n->output());
      if (!value) fail(n, "a constant it cannot read");
      ins.constant = *value;
    } else if (k == c10::prim::GetAttr || k == c10::prim::SetAttr) {
      ins.kind = k == c10::prim::GetAttr ? Instr::Kind::kGetAttr : Instr::Kind::kSetAttr;
      const auto type = n->input(0)->type()->cast<c10::ClassType>();
      if (!type) fail(n, "an attribute of a non-object");
      const auto slot_index = type->findAttributeSlot(n->s(jit::attr::name));
      if (!slot_index) fail(n, "an unknown attribute " + n->s(jit::attr::name));
      ins.attr_slot = *slot_index;
    } else if (k == c10::prim::If || k == c10::prim::Loop) {
      ins.kind = k == c10::prim::If ? Instr::Kind::kIf : Instr::Kind::kLoop;
      for (const jit::Block* b : n->blocks()) {
        Block block;
        for (const jit::Value* v : b->inputs()) block.params.push_back(slot(v));
        for (const jit::Node* m : b->nodes()) block.code.push_back(compile(m));
        for (const jit::Value* v : b->outputs()) block.returns.push_back(slot(v));
        ins.blocks.push_back(std::move(block));
      }
    } else if (k == c10::prim::unchecked_cast) {
      ins.kind = Instr::Kind::kIdentity;
    } else if (k == c10::prim::Uninitialized) {
      ins.kind = Instr::Kind::kNone;
    } else if (k == c10::prim::ListConstruct) {
      ins.kind = Instr::Kind::kListConstruct;
      ins.element_type = n->output()->type()->expectRef<c10::ListType>().getElementType();
    } else if (k == c10::prim::TupleConstruct) {
      ins.kind = Instr::Kind::kTupleConstruct;
    } else if (k == c10::prim::ListUnpack || k == c10::prim::TupleUnpack) {
      ins.kind = Instr::Kind::kUnpack;
    } else if (k == c10::prim::TupleIndex) {
      ins.kind = Instr::Kind::kTupleIndex;
    } else if (k == c10::aten::max_pool2d && n->inputs().size() == 6) {
      ins.op = jit::Operation(max_pool2d_op);
    } else if (k == c10::aten::conv2d && n->inputs().size() == 7 &&
               n->inputs()[4]->type()->kind() == c10::TypeKind::ListType) {
      ins.op = jit::Operation(conv2d_op);
    } else {
      try {
        ins.op = n->getOperation();
      } catch (const c10::Error& e) {
        fail(n, "an op it cannot run (" + first_line(e.what_without_backtrace()) + ")");
      } catch (const std::exception& e) {
        fail(n, "an op it cannot run (" + first_line(e.what()) + ")");
      }
      if (!ins.op) fail(n, "an op it cannot run");
    }
    return ins;
  }

 private:
  [[noreturn]] void fail(const jit::Node* n, const std::string& what) const {
    throw std::runtime_error(source_ + ": " + n->kind().toQualString() + " is " + what);
  }
  std::string source_;
  std::unordered_map<const jit::Value*, int> slots_;
  int next_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Site discovery.

// Ops whose output is a site, with the label of the site table.
const std::map<std::string, std::string>& site_kinds() {
  static const std::map<std::string, std::string> kinds = {
      {"aten::conv1d", "conv"},           {"aten::conv2d", "conv"},
      {"aten::conv3d", "conv"},           {"aten::_convolution", "conv"},
      {"aten::convolution", "conv"},      {"aten::conv_transpose1d", "conv"},
      {"aten::conv_transpose2d", "conv"}, {"aten::conv_transpose3d", "conv"},
      {"aten::linear", "linear"},         {"aten::addmm", "linear"},
      {"aten::matmul", "matmul"},         {"aten::mm", "matmul"},
      {"aten::bmm", "matmul"},            {"aten::baddbmm", "matmul"},
      {"aten::einsum", "matmul"},         {"aten::batch_norm", "batchnorm"},
      {"aten::layer_norm", "layernorm"},  {"aten::group_norm", "groupnorm"},
      {"aten::instance_norm", "instancenorm"},
      {"aten::relu", "relu"},             {"aten::relu6", "relu6"},
      {"aten::leaky_relu", "leaky_relu"}, {"aten::gelu", "gelu"},
      {"aten::silu", "silu"},             {"aten::sigmoid", "sigmoid"},
      {"aten::tanh", "tanh"},             {"aten::hardtanh", "hardtanh"},
      {"aten::elu", "elu"},               {"aten::hardswish", "hardswish"},
      {"aten::hardsigmoid", "hardsigmoid"}, {"aten::mish", "mish"},
      {"aten::softplus", "softplus"},     {"aten::softmax", "softmax"},
      {"aten::log_softmax", "log_softmax"}, {"aten::max_pool1d", "maxpool"},
      {"aten::max_pool2d", "maxpool"},    {"aten::max_pool3d", "maxpool"},
      {"aten::avg_pool1d", "avgpool"},    {"aten::avg_pool2d", "avgpool"},
      {"aten::avg_pool3d", "avgpool"},    {"aten::adaptive_avg_pool1d", "avgpool"},
      {"aten::adaptive_avg_pool2d", "avgpool"}, {"aten::adaptive_avg_pool3d", "avgpool"},
      {"aten::add", "add"},               {"aten::embedding", "embedding"},
  };
  return kinds;
}

// Recurrent layers: several outputs (the output sequence, the final states); their output
// sequence becomes a site through a marker (mark_recurrent_outputs).
const std::map<std::string, std::string>& recurrent_kinds() {
  static const std::map<std::string, std::string> kinds = {
      {"aten::lstm", "lstm"}, {"aten::gru", "gru"}, {"aten::rnn_tanh", "rnn"},
      {"aten::rnn_relu", "rnn"}};
  return kinds;
}

// Pure ops that only move or reinterpret data: recomputed by every node that needs them.
const std::set<std::string>& view_kinds() {
  static const std::set<std::string> kinds = {
      "aten::view",      "aten::reshape",  "aten::flatten",   "aten::unflatten",
      "aten::permute",   "aten::transpose", "aten::t",        "aten::contiguous",
      "aten::unsqueeze", "aten::squeeze",  "aten::select",    "aten::slice",
      "aten::expand",    "aten::expand_as", "aten::narrow",   "aten::chunk",
      "aten::split",     "aten::unbind",   "aten::view_as",   "aten::reshape_as",
      "aten::detach",    "aten::alias",    "aten::movedim",   "aten::numpy_T",
      "prim::ListUnpack", "prim::TupleUnpack", "prim::ListConstruct",
      "prim::TupleConstruct", "prim::TupleIndex", "aten::__getitem__"};
  return kinds;
}

bool is_tensor(const jit::Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

bool has_effects(const jit::Node* n) {
  const jit::NodeKind k = n->kind();
  if (k == c10::prim::SetAttr || k == c10::prim::RaiseException || n->hasSideEffects()) return true;
  if (k.is_aten()) {
    const std::string name = k.toUnqualString();
    if (name.size() > 1 && name.back() == '_' && name.rfind("__", 0) != 0) return true;  // in place
  }
  for (const jit::Block* b : n->blocks()) {
    for (const jit::Node* m : b->nodes()) {
      if (has_effects(m)) return true;
    }
  }
  return false;
}

bool is_in_place(const jit::Node* n) {
  if (!n->kind().is_aten()) return false;
  const std::string name = n->kind().toUnqualString();
  return name.size() > 1 && name.back() == '_' && name.rfind("__", 0) != 0;
}

// Rewrites top-level in-place ops (x.add_(y), relu_) that RemoveTensorMutation left into their
// functional form where nobody can see the difference: x is a fresh op output (not an input,
// attribute or view) read by nothing after the op. Site values must never be written in place:
// walks reuse them across evaluations.
void functionalize_in_place(jit::Graph& graph) {
  std::vector<jit::Node*> nodes(graph.nodes().begin(), graph.nodes().end());
  for (jit::Node* n : nodes) {
    if (!is_in_place(n) || n->outputs().size() != 1 || n->inputs().empty()) continue;
    const std::string name = n->kind().toUnqualString();
    const c10::Symbol functional =
        c10::Symbol::fromQualString("aten::" + name.substr(0, name.size() - 1));
    jit::Value* target = n->input(0);
    const jit::Node* producer = target->node();
    if (producer->owningBlock() != graph.block() || producer->kind() == c10::prim::Param ||
        producer->kind() == c10::prim::GetAttr ||
        view_kinds().count(producer->kind().toQualString())) {
      continue;
    }
    bool read_later = false;
    for (const jit::Use& use : target->uses()) {
      read_later = read_later || (use.user != n && !use.user->isBefore(n));
    }
    if (read_later || jit::getAllOperatorsFor(functional).empty()) continue;
    jit::Node* f = graph.create(functional, n->inputs(), 1);
    f->insertBefore(n);
    f->copyMetadata(n);
    f->output()->setType(n->output()->type());
    if (!f->maybeOperator()) {  // no functional overload with this signature
      f->destroy();
      continue;
    }
    n->output()->replaceAllUsesWith(f->output());
    n->destroy();
  }
}

// The output sequence of each top-level recurrent op (aten::lstm, gru, rnn_*) is read through an
// inserted aten::clone carrying the op's metadata: the clone is the site (labelled by the op),
// so the recurrent op itself, with its several outputs, runs once inside the site's segment.
// Returns the markers with their labels.
std::map<const jit::Node*, std::string> mark_recurrent_outputs(jit::Graph& graph) {
  std::map<const jit::Node*, std::string> marks;
  std::vector<jit::Node*> nodes(graph.nodes().begin(), graph.nodes().end());
  for (jit::Node* n : nodes) {
    const auto it = recurrent_kinds().find(n->kind().toQualString());
    if (it == recurrent_kinds().end() || n->outputs().empty()) continue;
    jit::Value* out = n->output(0);
    if (!out->hasUses()) continue;
    jit::WithInsertPoint guard(n);  // the None constant goes before the op
    jit::Node* mark = graph.create(c10::aten::clone, {out, graph.insertConstant(c10::IValue())}, 1);
    mark->insertAfter(n);
    mark->copyMetadata(n);
    mark->output()->setType(out->type());
    out->replaceAllUsesAfterNodeWith(mark, mark->output());
    marks[mark] = it->second;
  }
  return marks;
}

// Replaces x.dim() of the graph's input x by its known rank and folds what depends on it.
void fold_input_rank(std::shared_ptr<jit::Graph>& graph, int64_t rank) {
  jit::Value* x = graph->inputs()[1];
  bool folded = false;
  for (const jit::Use& use : x->uses()) {
    jit::Node* n = use.user;
    if (n->kind() != c10::aten::dim || n->outputs().size() != 1) continue;
    jit::WithInsertPoint guard(n);
    n->output()->replaceAllUsesWith(graph->insertConstant(rank));
    folded = true;
  }
  if (folded) jit::ConstantPropagation(graph);
}

// Replaces reads of constant module attributes (bools, numbers, strings, None; not `training`,
// and not attributes forward writes) by their values, then folds the control flow that tested
// them: torchvision's `if self.use_res_connect:` becomes straight-line code whose ops are
// sites.
void fold_module_constants(std::shared_ptr<jit::Graph>& graph, const jit::Module& module) {
  const jit::Value* self = graph->inputs()[0];
  std::vector<jit::Node*> reads;
  std::set<std::string> written;
  std::function<void(jit::Block*)> visit = [&](jit::Block* b) {
    for (jit::Node* n : b->nodes()) {
      if (n->kind() == c10::prim::GetAttr) reads.push_back(n);
      if (n->kind() == c10::prim::SetAttr) written.insert(n->s(jit::attr::name));
      for (jit::Block* inner : n->blocks()) visit(inner);
    }
  };
  visit(graph->block());
  bool folded = false;
  for (jit::Node* n : reads) {
    const std::string name = n->s(jit::attr::name);
    if (name == "training" || written.count(name)) continue;
    // The attribute's value, following the chain of attribute reads back to `self`.
    std::vector<std::string> path;
    const jit::Value* v = n->output();
    while (v != self && v->node()->kind() == c10::prim::GetAttr) {
      path.push_back(v->node()->s(jit::attr::name));
      v = v->node()->input(0);
    }
    if (v != self) continue;
    c10::IValue value = module._ivalue();
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      value = value.toObjectRef().getAttr(*it);
      if (it + 1 != path.rend() && !value.isObject()) break;
    }
    if (!(value.isBool() || value.isInt() || value.isDouble() || value.isString() ||
          value.isNone())) {
      continue;
    }
    jit::WithInsertPoint guard(n);
    n->output()->replaceAllUsesWith(graph->insertConstant(value));
    folded = true;
  }
  if (folded) jit::ConstantPropagation(graph);
}

// Values a top-level node reads that are defined outside it (its inputs and its blocks' free
// values), in first-use order.
std::vector<const jit::Value*> free_inputs(const jit::Node* n) {
  std::vector<const jit::Value*> out;
  std::unordered_set<const jit::Value*> defined, seen;
  auto use = [&](const jit::Value* v) {
    if (!defined.count(v) && seen.insert(v).second) out.push_back(v);
  };
  std::function<void(const jit::Node*)> visit = [&](const jit::Node* m) {
    for (const jit::Value* v : m->inputs()) use(v);
    for (const jit::Block* b : m->blocks()) {
      for (const jit::Value* v : b->inputs()) defined.insert(v);
      for (const jit::Node* inner : b->nodes()) {
        visit(inner);
        for (const jit::Value* v : inner->outputs()) defined.insert(v);
      }
      for (const jit::Value* v : b->outputs()) use(v);
    }
  };
  visit(n);
  return out;
}

// Module frames of a node's inlined call stack, outermost first: (identity of the call, module
// path). Calls on `self` (SELF) and plain functions add no module.
std::vector<std::pair<std::string, std::string>> module_frames(const jit::Node* n) {
  std::vector<std::pair<std::string, std::string>> frames;
  const auto cs = n->callstack();
  if (!cs) return frames;
  std::string key, path;
  for (const auto& entry : (*cs)->vec()) {
    const jit::Function* fn = std::get<0>(entry);
    key += (fn ? fn->name() : std::string("?")) + "@" + std::to_string(std::get<1>(entry).start()) +
           "/";
    const auto& info = std::get<2>(entry);
    if (info && !info->instance_name().empty() && info->instance_name() != "SELF") {
      path += (path.empty() ? "" : ".") + info->instance_name();
      key += info->instance_name() + "|";
      frames.emplace_back(key, path);
    }
  }
  return frames;
}

// "conv1.weight" for a value read from `self` through a chain of attributes, else "".
std::string attribute_path(const jit::Value* v, const jit::Value* self) {
  std::vector<std::string> parts;
  while (v != self) {
    const jit::Node* n = v->node();
    if (n->kind() != c10::prim::GetAttr) return "";
    parts.push_back(n->s(jit::attr::name));
    v = n->input(0);
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) path += (path.empty() ? "" : ".") + *it;
  return path;
}

// The imported graph and what discovery found in it.
struct Importer {
  std::string source;
  jit::Module module;
  std::shared_ptr<jit::Graph> graph;
  const jit::Value* self = nullptr;
  const jit::Value* x = nullptr;
  std::vector<const jit::Node*> tops;  ///< top-level nodes in graph order
  std::unordered_map<const jit::Node*, size_t> position;
  std::set<const jit::Node*> sites;  ///< site nodes (besides the input)
  const jit::Node* output = nullptr;
  std::unordered_set<const jit::Value*> scalar_like;  ///< 0-d tensors of shape arithmetic
  std::map<std::string, torch::Tensor> parameters, buffers;
  std::map<const jit::Node*, std::string> recurrent;  ///< output markers of recurrent ops

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(source + ": " + what);
  }

  std::string label(const jit::Node* n) const {
    const auto r = recurrent.find(n);
    if (r != recurrent.end()) return r->second;
    const auto it = site_kinds().find(n->kind().toQualString());
    return it != site_kinds().end() ? it->second : std::string(n->kind().toUnqualString());
  }

  bool is_site_kind(const jit::Node* n) const {
    if (recurrent.count(n)) return true;
    if (!site_kinds().count(n->kind().toQualString())) return false;
    if (n->outputs().size() != 1 || !is_tensor(n->output())) return false;
    if (scalar_like.count(n->output())) return false;
    if (n->kind() == c10::aten::add) {
      // A residual or bias addition of two tensors, not tensor + scalar.
      return n->inputs().size() >= 2 && is_tensor(n->input(0)) && is_tensor(n->input(1));
    }
    return true;
  }

  bool recomputable(const jit::Node* n) const {
    if (has_effects(n) || n->isNondeterministic()) return false;
    const jit::NodeKind k = n->kind();
    if (k == c10::prim::Constant || k == c10::prim::GetAttr) return true;
    if (view_kinds().count(n->kind().toQualString())) return true;
    for (const jit::Value* v : n->outputs()) {
      if (is_tensor(v) && !scalar_like.count(v)) return false;
    }
    return true;  // scalars, lists of scalars, shape arithmetic
  }

  /// `input_rank`: dimensions of the input batch (> 0: reads of x.dim() become this constant,
  /// so checks such as nn.LSTM's "is the input batched?" fold away).
  void load(const std::string& archive, int64_t input_rank = 0) {
    try {
      // LibTorch checks no CRC, and its importer crashes on some damaged code.
      verify_zip({reinterpret_cast<const uint8_t*>(archive.data()), archive.size()}, "");
    } catch (const std::runtime_error& e) {  // ": what"
      fail("not a TorchScript model (" + std::string(e.what()).substr(2) + ")");
    }
    try {
      std::istringstream in(archive);
      module = jit::load(in);
    } catch (const c10::Error& e) {
      fail("not a TorchScript model (" + first_line(e.what_without_backtrace()) + ")");
    } catch (const std::exception& e) {
      // torch::jit::ErrorReport (the archive's code does not compile) is no c10::Error.
      fail("not a TorchScript model (" + first_line(e.what()) + ")");
    }
    const auto forward = module.find_method("forward");
    if (!forward) fail("the TorchScript module has no forward method (a quell checkpoint?)");
    graph = forward->graph()->copy();
    jit::Inline(*graph);
    fold_module_constants(graph, module);
    if (input_rank > 0 && graph->inputs().size() == 2) fold_input_rank(graph, input_rank);
    // (output, (h, c)) built and taken apart again: the parts, so that a reader of the output
    // does not depend on the states.
    jit::LowerSimpleTuples(graph);
    jit::RemoveTensorMutation(graph);
    functionalize_in_place(*graph);
    jit::EliminateDeadCode(graph);
    recurrent = mark_recurrent_outputs(*graph);
    if (graph->inputs().size() != 2 || !is_tensor(graph->inputs()[1])) {
      fail("forward must take one tensor (the input batch); it takes " +
           std::to_string(graph->inputs().size() - 1) + " argument(s)");
    }
    if (graph->outputs().size() != 1 || !is_tensor(graph->outputs()[0])) {
      fail("forward must return one tensor (the output), not " +
           graph->outputs()[0]->type()->str());
    }
    self = graph->inputs()[0];
    x = graph->inputs()[1];
    for (const auto& p : module.named_parameters(/*recurse=*/true)) parameters[p.name] = p.value;
    for (const auto& b : module.named_buffers(/*recurse=*/true)) buffers[b.name] = b.value;
  }

  void discover() {
    for (const jit::Node* n : graph->nodes()) {
      position[n] = tops.size();
      tops.push_back(n);
      // Shape arithmetic: sizes as tensors (traced graphs), tensor constants, and pure ops on
      // nothing but those.
      bool scalar = n->kind() == c10::prim::NumToTensor || n->kind() == c10::prim::Constant;
      if (!scalar && !has_effects(n)) {
        bool any_tensor = false, all_scalar = true;
        for (const jit::Value* v : free_inputs(n)) {
          if (!is_tensor(v)) continue;
          any_tensor = true;
          all_scalar = all_scalar && scalar_like.count(v);
        }
        scalar = any_tensor && all_scalar;
      }
      if (scalar) {
        for (const jit::Value* v : n->outputs()) {
          if (is_tensor(v)) scalar_like.insert(v);
        }
      }
      if (is_site_kind(n)) sites.insert(n);
    }
    const jit::Value* out = graph->outputs()[0];
    if (out == x || out->node()->kind() == c10::prim::Param) fail("forward returns its input");
    output = out->node();
    if (output->owningBlock() != graph->block()) fail("the output is computed in control flow");
    sites.insert(output);
    // Values several sites need that are not cheap to recompute become sites themselves.
    for (;;) {
      std::map<const jit::Node*, int> users;
      for (const auto& seg : segments()) {
        for (const jit::Node* n : seg.second) ++users[n];
      }
      bool changed = false;
      for (const auto& [n, count] : users) {
        if (count < 2 || sites.count(n) || recomputable(n)) continue;
        if (n->outputs().size() == 1 && is_tensor(n->output())) {
          sites.insert(n);
          changed = true;
        } else if (has_effects(n)) {
          fail(std::string(n->kind().toQualString()) +
               " has side effects and several sites need its outputs; quell cannot split here");
        }  // a pure op with several outputs: recomputed (correct, only slower)
      }
      if (!changed) break;
    }
    for (const jit::Node* n : tops) {
      if (sites.count(n) && position[n] > position[output]) {
        fail("site " + std::string(n->kind().toQualString()) + " comes after the output");
      }
    }
  }

  bool is_site_value(const jit::Value* v) const {
    return v == x || (v->node()->owningBlock() == graph->block() && sites.count(v->node()));
  }

  // Per site in graph order: the top-level nodes its node runs (in graph order, site last).
  std::vector<std::pair<const jit::Node*, std::vector<const jit::Node*>>> segments() const {
    std::vector<const jit::Node*> order;
    for (const jit::Node* n : tops) {
      if (sites.count(n)) order.push_back(n);
    }
    std::vector<std::set<const jit::Node*>> members(order.size());
    auto pull = [&](size_t s, const jit::Node* root) {
      std::vector<const jit::Node*> stack{root};
      while (!stack.empty()) {
        const jit::Node* n = stack.back();
        stack.pop_back();
        if (!members[s].insert(n).second) continue;
        for (const jit::Value* v : free_inputs(n)) {
          if (v == self || is_site_value(v)) continue;
          stack.push_back(v->node());
        }
      }
    };
    for (size_t s = 0; s < order.size(); ++s) pull(s, order[s]);
    // Effects nobody's value depends on run with the next site (or the last one).
    std::set<const jit::Node*> pulled;
    for (const auto& m : members) pulled.insert(m.begin(), m.end());
    size_t next = 0;
    for (const jit::Node* n : tops) {
      while (next < order.size() && position.at(order[next]) < position.at(n)) ++next;
      if (sites.count(n) || pulled.count(n) || !has_effects(n)) continue;
      pull(std::min(next, order.size() - 1), n);
    }
    std::vector<std::pair<const jit::Node*, std::vector<const jit::Node*>>> out;
    for (size_t s = 0; s < order.size(); ++s) {
      std::vector<const jit::Node*> nodes(members[s].begin(), members[s].end());
      std::sort(nodes.begin(), nodes.end(), [&](const jit::Node* a, const jit::Node* b) {
        return position.at(a) < position.at(b);
      });
      out.emplace_back(order[s], std::move(nodes));
    }
    return out;
  }

  // Site names from the module hierarchy (docs/models.md).
  std::map<const jit::Node*, std::string> names() const {
    std::map<std::string, int> per_frame;  // sites whose innermost module frame is this call
    std::set<std::string> parents;         // frames with a deeper module frame below them
    for (const jit::Node* n : tops) {
      if (!sites.count(n)) continue;
      const auto frames = module_frames(n);
      if (!frames.empty()) ++per_frame[frames.back().first];
      for (size_t i = 0; i + 1 < frames.size(); ++i) parents.insert(frames[i].first);
    }
    for (const jit::Node* n : tops) {  // ops in a module's own code make it a parent too
      const auto frames = module_frames(n);
      for (size_t i = 0; i + 1 < frames.size(); ++i) parents.insert(frames[i].first);
    }
    std::map<const jit::Node*, std::string> out;
    std::map<std::string, int> used{{"input", 1}};
    for (const jit::Node* n : tops) {
      if (!sites.count(n)) continue;
      const auto frames = module_frames(n);
      std::string name;
      if (n == output && !is_site_kind(n) && frames.empty()) {
        name = "output";
      } else if (frames.empty()) {
        name = label(n);
      } else if (!parents.count(frames.back().first) && per_frame.at(frames.back().first) == 1) {
        name = frames.back().second;  // the one op of a leaf module: its path
      } else {
        name = frames.back().second + "." + label(n);
      }
      const int k = ++used[name];
      out[n] = k == 1 ? name : name + "#" + std::to_string(k);
    }
    return out;
  }

  std::vector<UnplacedOp> unplaced() const {
    std::vector<UnplacedOp> out;
    auto where = [](const jit::Node* n) {
      const auto frames = module_frames(n);
      return frames.empty() ? std::string() : frames.back().second;
    };
    std::function<void(const jit::Node*)> nested = [&](const jit::Node* n) {
      for (const jit::Block* b : n->blocks()) {
        for (const jit::Node* m : b->nodes()) {
          if (site_kinds().count(m->kind().toQualString()) && m->outputs().size() == 1 &&
              is_tensor(m->output())) {
            out.push_back({m->kind().toQualString(), where(m), "inside control flow"});
          }
          nested(m);
        }
      }
    };
    std::set<const jit::Node*> marked;  // recurrent ops whose output sequence is a site
    for (const auto& [mark, label] : recurrent) marked.insert(mark->input(0)->node());
    for (const jit::Node* n : tops) {
      nested(n);
      if (sites.count(n) || marked.count(n) || recomputable(n) || has_effects(n) ||
          !n->blocks().empty()) {
        continue;
      }
      bool tensor = false;
      for (const jit::Value* v : n->outputs()) tensor = tensor || is_tensor(v);
      if (!tensor) continue;
      const bool kind = site_kinds().count(n->kind().toQualString()) > 0;
      out.push_back({n->kind().toQualString(), where(n),
                     kind ? "several outputs" : "not a site kind"});
    }
    return out;
  }
};

// Registers an imported tensor in `root` under its dotted name (holder modules for the path),
// sharing its storage, so that checkpoints, optimisers and device moves see it.
void register_mirror(torch::nn::Module& root, const std::string& dotted, const torch::Tensor& t,
                     bool parameter, const std::string& source) {
  std::vector<std::string> parts;
  std::stringstream ss(dotted);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  if (parts.empty()) return;
  if (parts.front() == "denoisers") {
    throw std::runtime_error(source + ": a module named 'denoisers' clashes with quell's blocks");
  }
  torch::nn::Module* m = &root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    auto children = m->named_children();
    if (auto* child = children.find(parts[i])) {
      m = child->get();
    } else {
      m = m->register_module(parts[i], std::make_shared<torch::nn::Module>("Imported")).get();
    }
  }
  if (parameter) {
    m->register_parameter(parts.back(), t, /*requires_grad=*/true);
  } else {
    m->register_buffer(parts.back(), t);
  }
}

// Keeps the module (and the graph the instructions point into) alive with the model.
struct ScriptState {
  jit::Module module;
  std::shared_ptr<jit::Graph> graph;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open model file: No such file or directory");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool looks_like_model_file(const std::string& name) {
  if (name.find('/') != std::string::npos) return true;
  for (const char* ext : {".pt", ".pth", ".ts", ".jit", ".zip"}) {
    const std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
      return true;
    }
  }
  return false;
}

bool is_torchscript_model(const std::string& path) {
  try {
    const std::string archive = read_all(path);
    verify_zip({reinterpret_cast<const uint8_t*>(archive.data()), archive.size()}, path);
    std::istringstream in(archive);
    return jit::load(in).find_method("forward").has_value();
  } catch (const std::exception&) {  // c10::Error, or torch::jit::ErrorReport for bad code
    return false;
  }
}

torch::Tensor run_script_node(const Node& node, const std::vector<torch::Tensor>& values) {
  const ScriptOp& op = *node.script;
  std::vector<c10::IValue> env(static_cast<size_t>(op.num_slots));
  if (op.self_slot >= 0) env[op.self_slot] = op.self;
  for (const auto& [slot, site] : op.site_inputs) {
    env[slot] = op.clone_inputs ? values[site].clone() : values[site];
  }
  try {
    run_code(op.code, env);
  } catch (const c10::Error& e) {
    throw std::runtime_error("site " + op.where + ": " + first_line(e.what_without_backtrace()));
  }
  if (op.record_inputs) {
    op.input_shapes.clear();
    for (int s : op.op_inputs) {
      if (env[s].isTensor()) op.input_shapes.push_back(env[s].toTensor().sizes().vec());
    }
  }
  return env[op.result_slot].toTensor();
}

Model load_script_model(ModelSpec spec) {
  const std::string path = spec.name;
  return load_script_model(std::move(spec), read_all(path), path);
}

Model load_script_model(ModelSpec spec, std::string archive, const std::string& source) {
  Importer im;
  im.source = source;
  im.load(archive, static_cast<int64_t>(spec.sample_shape().size()) + 1);
  im.discover();
  const auto names = im.names();
  const auto segments = im.segments();

  std::map<const jit::Value*, int> index{{im.x, 0}};
  for (size_t i = 0; i < segments.size(); ++i) {
    index[segments[i].first->output()] = static_cast<int>(i) + 1;
  }
  std::vector<Node> nodes;
  Node input;
  input.op = OpType::kInput;
  input.name = "input";
  input.shape = spec.sample_shape();
  input.floating = spec.input_scalar_type() == torch::kFloat;
  nodes.push_back(input);
  const c10::IValue self(im.module._ivalue());
  for (const auto& [site, members] : segments) {
    auto op = std::make_shared<ScriptOp>();
    Compiler c(source);
    op->where = names.at(site);
    std::set<int> inputs;
    for (const jit::Node* n : members) {
      for (const jit::Value* v : free_inputs(n)) {
        if (v == im.self) {
          op->self_slot = c.slot(v);
        } else if (index.count(v) && v->node() != n) {
          if (inputs.insert(index.at(v)).second) op->site_inputs.emplace_back(c.slot(v), index.at(v));
        }
      }
    }
    for (const jit::Node* n : members) {
      op->code.push_back(c.compile(n));
      op->clone_inputs = op->clone_inputs || is_in_place(n);
    }
    for (const jit::Value* v : site->inputs()) {
      if (is_tensor(v)) op->op_inputs.push_back(c.slot(v));
    }
    op->result_slot = c.slot(site->output());
    op->num_slots = c.num_slots();
    op->self = self;

    Node node;
    node.op = OpType::kScript;
    node.name = names.at(site);
    node.label = im.label(site);
    node.inputs.assign(inputs.begin(), inputs.end());
    // Parameters the op reads; a conv, linear or matmul's parameter operand is its weight.
    for (size_t k = 0; k < site->inputs().size(); ++k) {
      const std::string p = attribute_path(site->input(k), im.self);
      const auto it = im.parameters.find(p);
      if (p.empty() || it == im.parameters.end()) continue;
      node.param_count += it->second.numel();
      const bool weighted = node.label == "conv" || node.label == "linear" || node.label == "matmul";
      if (weighted && node.label != "matmul" && k == 2 && it->second.dim() == 1) {
        node.bias = it->second;  // aten::linear / aten::conv2d (input, weight, bias, ...)
      }
      if (!weighted || node.weight.defined() || it->second.dim() < 2) continue;
      if (node.label == "matmul") {
        // x @ W: W is [fan-in, outputs]; W @ x: W is [outputs, fan-in].
        if (k == 1 && it->second.dim() == 2) node.weight = it->second.t();
        if (k == 0 && it->second.dim() == 2) node.weight = it->second;
      } else if (k == 1) {
        node.weight = it->second;
      }
    }
    if (im.recurrent.count(site)) {
      // The recurrent op's weights come as a list: count the parameters of its module.
      const auto frames = module_frames(site);
      const std::string prefix = frames.empty() ? "" : frames.back().second + ".";
      for (const auto& [name, t] : im.parameters) {
        if (!prefix.empty() && name.rfind(prefix, 0) == 0) node.param_count += t.numel();
      }
    }
    node.script = op;
    nodes.push_back(std::move(node));
  }

  // Shapes per sample, from one pass on a batch of two (eval mode, no site logic).
  {
    torch::NoGradGuard no_grad;
    const bool was_training = im.module.is_training();
    im.module.eval();
    std::vector<torch::Tensor> values(nodes.size());
    std::vector<int64_t> batch{2};
    for (int64_t d : spec.sample_shape()) batch.push_back(d);
    values[0] = torch::zeros(batch, torch::TensorOptions().dtype(spec.input_scalar_type()));
    try {
      for (size_t i = 1; i < nodes.size(); ++i) {
        nodes[i].script->record_inputs = true;
        values[i] = run_script_node(nodes[i], values);
        nodes[i].script->record_inputs = false;
      }
    } catch (const std::exception& e) {
      throw std::runtime_error(source + ": forward fails on a " + spec.input_text() +
                               " input (" + first_line(e.what()) +
                               "); give the model's input geometry (channels, height, width) "
                               "or its data");
    }
    im.module.train(was_training);
    for (size_t i = 1; i < nodes.size(); ++i) {
      const auto sizes = values[i].sizes();
      if (sizes.empty() || sizes[0] != 2) {
        throw std::runtime_error(source + ": site " + nodes[i].name +
                                 " does not keep the batch dimension first; quell needs "
                                 "[N, ...] values at every site");
      }
      nodes[i].shape.assign(sizes.begin() + 1, sizes.end());
      nodes[i].floating = values[i].is_floating_point();
      const auto& shapes = nodes[i].script->input_shapes;
      if (nodes[i].label == "matmul" && !nodes[i].weight.defined() && !shapes.empty() &&
          !shapes[0].empty()) {
        int64_t out = 1;
        for (int64_t d : nodes[i].shape) out *= d;
        nodes[i].macs = out * shapes[0].back();  // outputs x inner dimension
      }
    }
    const auto& logits = values.back();
    if (!logits.is_floating_point()) {
      throw std::runtime_error(source + ": forward returns " +
                               std::string(c10::toString(logits.scalar_type())) +
                               " values; quell needs floating-point outputs");
    }
    // Outputs per position: [N, classes], [N, T, classes] or [N, D]; [N] counts as one.
    const int64_t outputs = logits.dim() >= 2 ? logits.size(logits.dim() - 1) : 1;
    if (spec.num_classes == 0) spec.num_classes = outputs;
    if (outputs != spec.num_classes) {
      throw std::runtime_error(source + ": the model has " + std::to_string(outputs) +
                               " outputs but the data has " + std::to_string(spec.num_classes) +
                               " classes");
    }
  }

  Model model(spec);
  for (const auto& [name, t] : im.parameters) register_mirror(*model, name, t, true, source);
  for (const auto& [name, t] : im.buffers) register_mirror(*model, name, t, false, source);
  for (auto& n : nodes) detail::ModelAccess::add_node(*model, std::move(n));
  auto info = std::make_shared<ScriptInfo>();
  info->source = source;
  info->archive = std::move(archive);
  info->unplaced = im.unplaced();
  auto state = std::make_shared<ScriptState>(ScriptState{im.module, im.graph});
  detail::ModelAccess::set_script(*model, state, info,
                                  [state](bool on) { state->module.train(on); });
  return model;
}

}  // namespace quell
