// strata-spm-train: SentencePiece's trainer as a helper process. The trainer
// logs through iostreams, which break in the privately bound module (see
// spm_bridge.h), so training runs here, in a process without libprotobuf.
//
// Protocol: argv[1] holds the trainer flags (no --input). Stdin carries the
// sentences, each as "<decimal length>\n<bytes>". On success the serialized
// model goes to stdout and the exit status is 0; on failure the reason goes
// to stderr and the status is 1. Includes no Abseil (see spm_bridge.h).
#include <fcntl.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: strata-spm-train FLAGS < sentences\n");
    return 1;
  }
  std::vector<std::string> sentences;
  size_t length = 0;
  while (std::cin >> length) {
    std::cin.get();  // the newline after the length
    std::string s(length, '\0');
    if (!std::cin.read(s.data(), static_cast<std::streamsize>(length))) {
      std::fprintf(stderr, "strata-spm-train: truncated sentence on stdin\n");
      return 1;
    }
    sentences.push_back(std::move(s));
  }
  VectorIterator it(sentences);
  std::string model;
  // The trainer logs its flags before it reads --minloglevel; keep stderr
  // for real errors.
  std::fflush(stderr);
  const int saved = dup(2);
  const int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (saved >= 0 && devnull >= 0) dup2(devnull, 2);
  auto status = sentencepiece::SentencePieceTrainer::Train(argv[1], &it, &model);
  if (saved >= 0 && devnull >= 0) {
    std::cerr.flush();
    dup2(saved, 2);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::cout.write(model.data(), static_cast<std::streamsize>(model.size()));
  std::cout.flush();
  return std::cout.good() ? 0 : 1;
}
