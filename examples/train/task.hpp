// The task: multi-query associative recall over the whole sequence, made on
// the fly from a seed (no data to download).
//
// A sequence of N tokens is N/C cells of C tokens. `pairs` key/value pairs
// sit in cells drawn uniformly from those that end at least `gap` tokens
// before the first query: cell [k, v, filler...]. The last `pairs` cells ask
// for every pair once, in random order: cell [Q, k, v, filler...]; the loss
// is on the answer only (predicting v at the query's key). Keys are distinct
// within a sequence, values uniform, so without the pair the answer is a
// guess (chance = 1/values); filler tokens are uniform noise.
//
// Why cells: a dilated branch (w, r) lets a query at t see only keys at
// positions congruent to t modulo r (docs/SPEC.md section 2: queries and keys
// are dilated alike). The pair's value (where layer 1 can copy the pair's
// key, one token before it) and the query's key both sit at offset 1 of their
// cell, so with C a multiple of every r of the config they share their
// residue in every branch, and head 1 (offset 1 for every r >= 2) sees one
// from the other. Any branch that spans both cells can carry the answer;
// a branch of w <= gap cannot (every pair is at least `gap` tokens before
// every query).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ringattn/status.hpp"

namespace train {

struct TaskSpec {
  int64_t seq = 0;        // N
  int64_t cell = 16;      // C
  int64_t pairs = 48;
  int64_t keys = 64;
  int64_t values = 32;
  int64_t filler = 1;     // noise vocabulary (1: a blank; more: random noise, slower to learn)
  int64_t gap = 512;      // tokens, at least, from any pair to any query

  // Token ids: filler [0, F), keys [F, F+K), values [F+K, F+K+V), Q marker.
  int64_t vocab() const { return filler + keys + values + 1; }
  int64_t key_token(int64_t i) const { return filler + i; }
  int64_t value_token(int64_t i) const { return filler + keys + i; }
  int64_t query_token() const { return filler + keys + values; }
  // Cells where pairs may go: [0, pair_cells()).
  int64_t pair_cells() const;
  // First token of the query region.
  int64_t query_start() const { return seq - pairs * cell; }
};

// Values out of range, named with their flag (--pairs, --cell, ...).
ringattn::Status validate_task(const TaskSpec& t);

// One sequence, all N tokens (every rank makes the whole sequence and keeps
// its shard: N is small next to the model's work). stream 0 = training,
// 1 = held-out; index = which sequence of the stream.
struct Sequence {
  std::vector<int32_t> tokens;     // N
  std::vector<int64_t> answer_pos;  // positions whose next token is an answer (the query's key)
  std::vector<int32_t> answer;      // that next token
};
Sequence make_sequence(const TaskSpec& t, uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace train
