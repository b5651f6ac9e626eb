#include "runtime/backend/socket_link.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strata {
namespace {

constexpr std::string_view kIdPrefix = "strata-socket-peer:";
constexpr size_t kNameBytes = 16;
constexpr size_t kSecretBytes = 16;

using Clock = std::chrono::steady_clock;

// For poll(): 0 once `deadline` has passed, at most a day (time_point::max()
// means no deadline, and its milliseconds do not fit an int).
int RemainingMs(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return 86'400'000;
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 86'400'000));
}

std::string ErrnoText() { return std::strerror(errno); }

// The abstract address of `rank`'s listener in the group named `name`.
sockaddr_un Address(std::string_view name, int rank, socklen_t* length) {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  const std::string path =
      absl::StrCat("strata-peer-", absl::BytesToHexString(std::string(name)), "-", rank);
  a.sun_path[0] = '\0';  // abstract: no file, gone with its last holder
  std::memcpy(a.sun_path + 1, path.data(), path.size());
  *length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  return a;
}

absl::Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::InternalError(absl::StrCat("fcntl(O_NONBLOCK): ", ErrnoText()));
  }
  return absl::OkStatus();
}

// Writes or reads exactly `n` bytes on a non-blocking socket by `deadline`.
absl::Status ExactIo(int fd, char* data, size_t n, bool write, Clock::time_point deadline) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r =
        write ? send(fd, data + done, n - done, MSG_NOSIGNAL) : recv(fd, data + done, n - done, 0);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return absl::UnavailableError("the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return absl::UnavailableError(ErrnoText());
    pollfd p = {fd, static_cast<short>(write ? POLLOUT : POLLIN), 0};
    if (poll(&p, 1, RemainingMs(deadline)) == 0) {
      return absl::DeadlineExceededError("timed out");
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string NewSocketPeerGroupId() {
  std::random_device random;  // /dev/urandom
  std::string id(kIdPrefix);
  for (size_t i = 0; i < kNameBytes + kSecretBytes; ++i) {
    id.push_back(static_cast<char>(random() & 0xFF));
  }
  return id;
}

bool IsSocketPeerGroupId(std::string_view id) {
  return id.size() == kIdPrefix.size() + kNameBytes + kSecretBytes &&
         id.substr(0, kIdPrefix.size()) == kIdPrefix;
}

absl::StatusOr<std::unique_ptr<SocketCommunicator>> SocketCommunicator::Join(const PeerGroup& group,
                                                                             int64_t element_bytes,
                                                                             std::string label) {
  if (!IsSocketPeerGroupId(group.unique_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": the peer group id is not a socket group's (", group.unique_id.size(),
                     " bytes); a simulated device moves hidden states by socket, not NCCL"));
  }
  if (group.size < 2 || group.rank < 0 || group.rank >= group.size || element_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": peer group rank ", group.rank, " of ", group.size));
  }
  const std::string_view id(group.unique_id);
  const std::string_view name = id.substr(kIdPrefix.size(), kNameBytes);
  const std::string secret(id.substr(kIdPrefix.size() + kNameBytes, kSecretBytes));
  const bool from_prev = group.recv_from_prev && group.rank > 0;
  const bool to_next = group.send_to_next && group.rank + 1 < group.size;
  const auto deadline = Clock::now() + std::chrono::milliseconds(group.timeout_ms);
  auto comm = std::unique_ptr<SocketCommunicator>(
      new SocketCommunicator(group.rank, element_bytes, std::move(label)));
  auto fail = [&](const std::string& what) {
    return absl::UnavailableError(absl::StrCat(comm->label_, ": peer group rank ", group.rank,
                                               " of ", group.size, ": ", what));
  };

  // Listen first, so that the previous rank's connect finds us while we
  // connect to the next one.
  int listener = -1;
  if (from_prev) {
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    socklen_t length = 0;
    const sockaddr_un a = Address(name, group.rank, &length);
    if (listener < 0 || bind(listener, reinterpret_cast<const sockaddr*>(&a), length) != 0 ||
        listen(listener, 16) != 0) {
      const std::string why = ErrnoText();
      if (listener >= 0) close(listener);
      return fail(absl::StrCat("cannot listen for rank ", group.rank - 1, ": ", why));
    }
  }
  absl::Cleanup close_listener = [&listener] {
    if (listener >= 0) close(listener);
  };

  if (to_next) {
    socklen_t length = 0;
    const sockaddr_un a = Address(name, group.rank + 1, &length);
    for (;;) {
      const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        return fail(absl::StrCat("socket: ", ErrnoText()));
      }
      if (connect(fd, reinterpret_cast<const sockaddr*>(&a), length) == 0) {
        comm->next_fd_ = fd;
        break;
      }
      const int err = errno;
      close(fd);
      if ((err != ECONNREFUSED && err != ENOENT && err != EAGAIN) || RemainingMs(deadline) == 0) {
        return fail(
            absl::StrCat("cannot connect to rank ", group.rank + 1, ": ", std::strerror(err)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // not listening yet
    }
    std::string hello = secret;
    const int32_t me = group.rank;
    hello.append(reinterpret_cast<const char*>(&me), sizeof(me));
    absl::Status s = SetNonBlocking(comm->next_fd_);
    if (s.ok()) s = ExactIo(comm->next_fd_, hello.data(), hello.size(), true, deadline);
    if (!s.ok()) {
      return fail(absl::StrCat("greeting rank ", group.rank + 1, ": ", s.message()));
    }
    comm->writer_ = std::thread([c = comm.get()] { c->Write(); });
  }

  // The previous rank, and nobody else: a connection without the secret and
  // that rank is dropped and the wait goes on.
  while (from_prev && comm->prev_fd_ < 0) {
    pollfd p = {listener, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(deadline)) <= 0) {
      return fail(absl::StrCat("rank ", group.rank - 1, " did not connect within ",
                               group.timeout_ms, " ms"));
    }
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    std::string hello(kSecretBytes + sizeof(int32_t), '\0');
    const auto greeting_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(2));
    int32_t rank = -1;
    if (ExactIo(fd, hello.data(), hello.size(), false, greeting_deadline).ok()) {
      std::memcpy(&rank, hello.data() + kSecretBytes, sizeof(rank));
    }
    if (rank == group.rank - 1 && hello.compare(0, kSecretBytes, secret) == 0) {
      comm->prev_fd_ = fd;
    } else {
      close(fd);
    }
  }
  return comm;
}

SocketCommunicator::~SocketCommunicator() { CloseAll(); }

void SocketCommunicator::Write() {
  std::unique_lock<std::mutex> lock(out_mu_);
  for (;;) {
    out_cv_.wait(lock, [this] { return out_stop_ || out_pending_; });
    if (out_stop_) return;
    lock.unlock();
    // No deadline here: PeerLink's wait has one, and aborts (which stops
    // this write) when it passes.
    const absl::Status s =
        ExactIo(next_fd_, out_.data(), out_.size(), true, Clock::time_point::max());
    lock.lock();
    if (!s.ok() && out_error_.ok()) {
      out_error_ =
          absl::UnavailableError(absl::StrCat("sending to rank ", rank_ + 1, ": ", s.message()));
    }
    out_pending_ = false;
  }
}

void SocketCommunicator::CloseAll() {
  // Shutting the sockets down wakes the writer out of any wait first.
  for (int fd : {prev_fd_, next_fd_}) {
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
  }
  if (writer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      out_stop_ = true;
    }
    out_cv_.notify_all();
    writer_.join();
  }
  for (int* fd : {&prev_fd_, &next_fd_}) {
    if (*fd >= 0) {
      close(*fd);
      *fd = -1;
    }
  }
}

void SocketCommunicator::Abort() {
  aborted_ = true;
  CloseAll();
}

absl::Status SocketCommunicator::Enqueue(const PeerTransfer& t) {
  if (aborted_) return absl::UnavailableError(absl::StrCat(label_, ": the link was aborted"));
  const bool send = t.op == PeerOp::kSend || (t.op == PeerOp::kWarmUp && t.to >= 0);
  const bool receive = t.op == PeerOp::kRecv || (t.op == PeerOp::kWarmUp && t.from >= 0);
  if (t.count < 0) return absl::InvalidArgumentError(absl::StrCat("count ", t.count));
  warm_up_ = t.op == PeerOp::kWarmUp;
  if (warm_up_) scratch_.assign(static_cast<size_t>(t.count * element_bytes_), '\0');
  if (send) {
    if (t.to != rank_ + 1 || next_fd_ < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ": rank ", rank_, " has no link to rank ", t.to));
    }
    std::lock_guard<std::mutex> lock(out_mu_);
    if (out_pending_) {
      return absl::FailedPreconditionError(absl::StrCat(label_, ": a send is still in progress"));
    }
    const int64_t bytes = t.count * element_bytes_;
    const char* src = warm_up_ ? scratch_.data() : static_cast<const char*>(t.src);
    out_.resize(sizeof(int64_t) + static_cast<size_t>(bytes));
    std::memcpy(out_.data(), &t.count, sizeof(int64_t));
    if (bytes > 0) std::memcpy(out_.data() + sizeof(int64_t), src, static_cast<size_t>(bytes));
    out_pending_ = true;
    out_cv_.notify_all();
  }
  if (receive) {
    if (t.from != rank_ - 1 || prev_fd_ < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ": rank ", rank_, " has no link from rank ", t.from));
    }
    if (receiving_) {
      return absl::FailedPreconditionError(
          absl::StrCat(label_, ": a receive is still in progress"));
    }
    receiving_ = true;
    in_dst_ = warm_up_ ? scratch_.data() : static_cast<char*>(t.dst);
    in_count_ = t.count;
    in_done_ = 0;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> SocketCommunicator::Enqueued() {
  if (aborted_) return absl::UnavailableError(absl::StrCat(label_, ": the link was aborted"));
  return true;
}

absl::StatusOr<bool> SocketCommunicator::Receive() {
  const size_t header = sizeof(int64_t);
  const size_t total = header + static_cast<size_t>(in_count_ * element_bytes_);
  while (receiving_ && in_done_ < total) {
    char* at = in_done_ < header ? in_header_ + in_done_ : in_dst_ + (in_done_ - header);
    const size_t want = in_done_ < header ? header - in_done_ : total - in_done_;
    const ssize_t r = recv(prev_fd_, at, want, 0);
    if (r == 0) {
      return absl::UnavailableError(absl::StrCat("rank ", rank_ - 1, " closed the connection"));
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      return absl::UnavailableError(
          absl::StrCat("receiving from rank ", rank_ - 1, ": ", ErrnoText()));
    }
    const bool had_header = in_done_ >= header;
    in_done_ += static_cast<size_t>(r);
    if (!had_header && in_done_ >= header) {
      int64_t count = 0;
      std::memcpy(&count, in_header_, sizeof(count));
      if (count != in_count_) {
        return absl::DataLossError(absl::StrCat("rank ", rank_ - 1, " sent ", count,
                                                " elements where ", in_count_, " were expected"));
      }
    }
  }
  receiving_ = false;
  return true;
}

absl::StatusOr<bool> SocketCommunicator::Finished(PeerOp op) {
  if (aborted_) return absl::UnavailableError(absl::StrCat(label_, ": the link was aborted"));
  bool sent = true, received = true;
  if (op != PeerOp::kRecv) {
    std::lock_guard<std::mutex> lock(out_mu_);
    if (!out_error_.ok()) return out_error_;
    sent = !out_pending_;
  }
  if (op != PeerOp::kSend) {
    absl::StatusOr<bool> r = Receive();
    if (!r.ok()) return r;
    received = *r;
  }
  return sent && received;
}

}  // namespace strata
