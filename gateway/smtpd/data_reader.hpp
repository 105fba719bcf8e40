// The DATA reader: message content bytes in, canonical content out.
//
// It owns the three rules that make SMTP smuggling impossible (RFC 5321 2.3.8, 4.1.1.4):
//  - only <CR><LF>.<CR><LF> ends the data; a dot line after a bare <LF>, or ended by a bare
//    <LF>, is content;
//  - every line is stored with <CR><LF>, so what is relayed later cannot be read differently by
//    the next hop;
//  - a bare <CR> is refused, and a bare <LF> is refused when the listener says so (otherwise it
//    is taken as a line end, as many appliances send them).
// Dot-unstuffing (RFC 5321 4.5.2) happens here and nowhere else. Errors are sticky: the reader
// keeps consuming until the end of data so that the one reply comes at the final dot.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gateway {

enum class DataError { None, BareCr, BareLf, LineTooLong, TooBig };

struct DataLimits {
    uint64_t message_size = 0;  // octets of canonical content; beyond it: TooBig
    uint64_t line_length = 0;   // octets in one line without <CR><LF>; beyond it: LineTooLong
    bool reject_bare_lf = false;
};

class DataReader {
public:
    explicit DataReader(DataLimits limits) : m_limits(limits) {}

    // Consumes bytes up to and including the end-of-data line; appends content to `out`
    // (nothing once an error is set). Returns the number of bytes consumed.
    size_t feed(std::string_view in, std::string& out);

    bool done() const { return m_state == State::Done; }
    DataError error() const { return m_error; }
    uint64_t size() const { return m_size; }  // canonical octets, counted even past the limit

private:
    enum class State { LineStart, Dot, DotCr, InLine, Cr, Done };

    size_t plain_lines(std::string_view in, size_t i) const;
    void emit(std::string& out, std::string_view bytes);
    void end_line(std::string& out, bool crlf);
    void fail(DataError e);

    DataLimits m_limits;
    State m_state = State::LineStart;
    bool m_prev_crlf = true;  // the DATA command line ended with <CR><LF>
    uint64_t m_line = 0;
    uint64_t m_size = 0;
    DataError m_error = DataError::None;
};

}  // namespace gateway
