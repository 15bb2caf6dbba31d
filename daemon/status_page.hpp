#pragma once
// The live status page (daemon/status_page.html), embedded in the binary at build time so that
// serving it needs no file at run time and viewing it needs no network.

#include <string_view>

namespace tunneld::daemon {

/// The whole page: HTML with its style and script inline; it polls GET /status.
std::string_view status_page_html() noexcept;

} // namespace tunneld::daemon
