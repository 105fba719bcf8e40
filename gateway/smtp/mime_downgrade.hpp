// The 8BITMIME downgrade (RFC 6152 3, RFC 2045): a message with 8-bit content for a server that
// does not offer 8BITMIME goes with its parts in quoted-printable, as Postfix's smtp converts it.
// Header sections and the MIME structure stay as they are: every leaf part that is not already
// base64 or quoted-printable gets "Content-Transfer-Encoding: quoted-printable" and its body
// encoded (RFC 2045 6.7); multipart bodies, their delimiters, preambles and epilogues, and
// message/rfc822 parts (whose inner message is converted the same way) keep their shape. A
// message without MIME headers becomes text/plain with charset=unknown-8bit (RFC 1428).
//
// No I/O: content lines (<CR><LF>, as stored) in, in pieces of any size; converted lines out.
// Call order: feed() for every piece, then finish().
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gateway {

class MimeDowngrade {
public:
    void feed(std::string_view content, std::string& out);
    void finish(std::string& out);

    static constexpr size_t k_max_header_section = 64 * 1024;  // past it, a section goes as it is
    // Postfix's mime_nesting_limit: an entity this deep is a leaf, its body (nested parts and
    // all) converted as one, so a hostile message costs neither memory nor time per level.
    static constexpr size_t k_max_depth = 100;
    // A longer line is passed on in pieces (in quoted-printable, with soft line breaks), so that
    // a message of one long line costs no more memory than this.
    static constexpr size_t k_max_line = 8192;

private:
    struct Entity {
        bool top = false;
        bool multipart = false;  // its body has parts between delimiters
        bool message = false;    // its body is a message (message/rfc822, message/global)
        bool digest = false;     // multipart/digest: parts are message/rfc822 unless they say otherwise
        bool in_headers = true;  // before the empty line that ends its header section
        bool convert = false;    // its body goes in quoted-printable
        bool closed = false;     // a multipart after its close delimiter: the epilogue
        std::string boundary;
    };

    void line(std::string_view l, std::string& out);
    void piece(std::string& out);
    bool delimiter(std::string_view l, std::string& out);
    void end_headers(std::string& out);
    void flush_headers(std::string& out);
    void push(bool message_default);
    static Entity top_entity() {
        Entity e;
        e.top = true;
        return e;
    }

    std::vector<Entity> m_stack{top_entity()};
    std::vector<std::string> m_fields;  // the header section being read, one entry per field
    size_t m_section = 0;               // its octets
    std::string m_partial;              // a line not yet ended
    bool m_continued = false;           // and begun in a piece already passed on
};

// RFC 2045 6.7: one line (without <CR><LF>) in quoted-printable, soft line breaks included, each
// output line ending in <CR><LF>.
std::string quoted_printable_line(std::string_view line);

}  // namespace gateway
