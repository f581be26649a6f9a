#include "worker/output_uploader.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace pcfarm {
namespace {

// Plays the coordinator's side: holds what arrived in order and answers
// each frame as output_uploads.cc does.
struct FakeCoordinator {
  std::vector<wire::WorkerFrame> sent;
  std::string held;
  uint64_t size = 0;
  bool complete = false;

  // Answers the oldest frame not answered yet.
  wire::OutputReply Answer() {
    REQUIRE(!sent.empty());
    wire::WorkerFrame f = sent.front();
    sent.erase(sent.begin());
    wire::OutputReply r;
    if (f.has_output_begin()) {
      r.set_attempt_id(f.output_begin().attempt_id());
      r.set_hash(f.output_begin().hash());
      size = f.output_begin().size();
      r.set_received(held.size());
      r.set_complete(complete);
    } else {
      REQUIRE(f.has_output_chunk());
      r.set_attempt_id(f.output_chunk().attempt_id());
      r.set_hash(f.output_chunk().hash());
      if (f.output_chunk().offset() == held.size()) held += f.output_chunk().data();
      r.set_received(held.size());
      complete = held.size() == size;
      r.set_complete(complete);
    }
    return r;
  }
};

std::shared_ptr<const std::string> Bytes(size_t n, char c) {
  return std::make_shared<const std::string>(n, c);
}

TEST_CASE("an output goes in chunks, a window at a time, then completes", "[uploader]") {
  FakeCoordinator c;
  OutputUploader up([&](wire::WorkerFrame f) { c.sent.push_back(std::move(f)); }, 2, 1000);
  up.SetChunkBytes(100);
  up.Start(5, std::string(32, 'h'), Bytes(450, 'x'), 0);
  REQUIRE(c.sent.size() == 1);
  CHECK(c.sent[0].has_output_begin());
  CHECK(c.sent[0].output_begin().size() == 450);
  auto r = up.OnReply(c.Answer(), 0);
  CHECK(r.kind == OutputUploader::Reply::kNothing);
  CHECK(c.sent.size() == 2);  // the window
  int replies = 0;
  while (!c.sent.empty()) {
    r = up.OnReply(c.Answer(), 0);
    ++replies;
    CHECK(c.sent.size() <= 2);
  }
  CHECK(replies == 5);  // 100 x 4 + 50
  CHECK(r.kind == OutputUploader::Reply::kComplete);
  CHECK(r.attempt == 5);
  CHECK(c.held == std::string(450, 'x'));
  CHECK(up.queued() == 0);
  CHECK(up.bytes_sent() == 450);
}

TEST_CASE("an upload continues from what the coordinator holds", "[uploader]") {
  FakeCoordinator c;
  c.held = std::string(250, 'x');  // a partial upload from before
  OutputUploader up([&](wire::WorkerFrame f) { c.sent.push_back(std::move(f)); }, 4, 1000);
  up.SetChunkBytes(100);
  up.Start(5, std::string(32, 'h'), Bytes(300, 'x'), 0);
  (void)up.OnReply(c.Answer(), 0);
  REQUIRE(c.sent.size() == 1);
  CHECK(c.sent[0].output_chunk().offset() == 250);
  CHECK(c.sent[0].output_chunk().data().size() == 50);
  auto r = up.OnReply(c.Answer(), 0);
  CHECK(r.kind == OutputUploader::Reply::kComplete);
  CHECK(up.bytes_sent() == 50);
}

TEST_CASE("a stored output is not sent again", "[uploader]") {
  FakeCoordinator c;
  c.complete = true;
  OutputUploader up([&](wire::WorkerFrame f) { c.sent.push_back(std::move(f)); }, 4, 1000);
  up.Start(5, std::string(32, 'h'), Bytes(300, 'x'), 0);
  auto r = up.OnReply(c.Answer(), 0);
  CHECK(r.kind == OutputUploader::Reply::kComplete);
  CHECK(c.sent.empty());
  CHECK(up.bytes_sent() == 0);
}

TEST_CASE("every byte held but not said complete: BEGIN asks again", "[uploader]") {
  // Another worker's upload of the same bytes filled the coordinator's
  // partial while ours was in flight: our chunk is answered as a repeat.
  std::vector<wire::WorkerFrame> sent;
  OutputUploader up([&](wire::WorkerFrame f) { sent.push_back(std::move(f)); }, 4, 1000);
  up.Start(3, std::string(32, 'h'), Bytes(10, 'x'), 0);
  wire::OutputReply r;
  r.set_attempt_id(3);
  r.set_hash(std::string(32, 'h'));
  CHECK(up.OnReply(r, 0).kind == OutputUploader::Reply::kNothing);  // BEGIN: 0 held
  REQUIRE(sent.size() == 2);
  CHECK(sent[1].has_output_chunk());
  r.set_received(10);
  CHECK(up.OnReply(r, 0).kind == OutputUploader::Reply::kNothing);  // a repeat
  REQUIRE(sent.size() == 3);
  CHECK(sent[2].has_output_begin());
  r.set_complete(true);
  CHECK(up.OnReply(r, 0).kind == OutputUploader::Reply::kComplete);
  CHECK(up.queued() == 0);
}

TEST_CASE("uploads go one at a time, oldest first", "[uploader]") {
  FakeCoordinator c;
  OutputUploader up([&](wire::WorkerFrame f) { c.sent.push_back(std::move(f)); }, 4, 1000);
  up.Start(1, std::string(32, 'a'), Bytes(10, 'a'), 0);
  up.Start(2, std::string(32, 'b'), Bytes(10, 'b'), 0);
  up.Start(1, std::string(32, 'a'), Bytes(10, 'a'), 0);  // queued already
  CHECK(up.queued() == 2);
  // The heartbeat's `uploading`: both, the one being sent first.
  CHECK(up.Attempts() == std::vector<uint64_t>{1, 2});
  REQUIRE(c.sent.size() == 1);
  CHECK(c.sent[0].output_begin().attempt_id() == 1);
  (void)up.OnReply(c.Answer(), 0);
  auto r = up.OnReply(c.Answer(), 0);
  CHECK(r.kind == OutputUploader::Reply::kComplete);
  CHECK(r.attempt == 1);
  CHECK(up.Attempts() == std::vector<uint64_t>{2});
  REQUIRE(c.sent.size() == 1);
  CHECK(c.sent[0].output_begin().attempt_id() == 2);
  up.Drop(2, 0);
  CHECK(up.Attempts().empty());
}

TEST_CASE("a refused upload waits, and the others go first", "[uploader]") {
  std::vector<wire::WorkerFrame> sent;
  OutputUploader up([&](wire::WorkerFrame f) { sent.push_back(std::move(f)); }, 4, 1000);
  up.Start(1, std::string(32, 'a'), Bytes(10, 'a'), 0);
  up.Start(2, std::string(32, 'b'), Bytes(10, 'b'), 0);
  wire::OutputReply no;
  no.set_attempt_id(1);
  no.set_hash(std::string(32, 'a'));
  no.set_error("the disk is full");
  auto r = up.OnReply(no, 50);
  CHECK(r.kind == OutputUploader::Reply::kRefused);
  CHECK(r.error == "the disk is full");
  REQUIRE(sent.size() == 2);
  CHECK(sent[1].output_begin().attempt_id() == 2);
  // 2 completes; 1 waits until its retry time.
  wire::OutputReply done;
  done.set_attempt_id(2);
  done.set_hash(std::string(32, 'b'));
  done.set_complete(true);
  CHECK(up.OnReply(done, 60).kind == OutputUploader::Reply::kComplete);
  CHECK(sent.size() == 2);
  up.Tick(500);
  CHECK(sent.size() == 2);
  up.Tick(1050);
  REQUIRE(sent.size() == 3);
  CHECK(sent[2].output_begin().attempt_id() == 1);
}

TEST_CASE("replies for nothing queued", "[uploader]") {
  std::vector<wire::WorkerFrame> sent;
  OutputUploader up([&](wire::WorkerFrame f) { sent.push_back(std::move(f)); }, 4, 1000);
  wire::OutputReply r;
  r.set_attempt_id(9);
  r.set_hash(std::string(32, 'z'));
  // The coordinator got a RESULT whose output it does not hold.
  CHECK(up.OnReply(r, 0).kind == OutputUploader::Reply::kUploadAgain);
  // Progress for an upload it forgot: nothing.
  r.set_received(100);
  CHECK(up.OnReply(r, 0).kind == OutputUploader::Reply::kNothing);
  // A dropped upload's late replies are ignored; the next one starts.
  up.Start(1, std::string(32, 'a'), Bytes(10, 'a'), 0);
  up.Start(2, std::string(32, 'b'), Bytes(10, 'b'), 0);
  up.Drop(1, 0);
  REQUIRE(sent.size() == 2);
  CHECK(sent[1].output_begin().attempt_id() == 2);
  wire::OutputReply late;
  late.set_attempt_id(1);
  late.set_hash(std::string(32, 'a'));
  late.set_complete(true);
  CHECK(up.OnReply(late, 0).kind == OutputUploader::Reply::kNothing);
  up.Reset();
  CHECK(up.queued() == 0);
}

}  // namespace
}  // namespace pcfarm
