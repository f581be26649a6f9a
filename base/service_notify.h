// ServiceNotify: tells systemd how a Type=notify daemon is doing
// (sd_notify(3) from libsystemd): READY=1 once it serves, STOPPING=1 when
// it begins to stop, WATCHDOG=1 from its main loop (the unit's WatchdogSec
// restarts a loop that stops turning), STATUS= a line for `systemctl
// status`. Outside systemd ($NOTIFY_SOCKET unset) every call does nothing.
//
// Thread-safety: any thread.
#pragma once

#include <string>

namespace pcfarm {

void NotifyServiceReady();
void NotifyServiceStopping();
// Cheap enough for every turn of a loop: it sends at most every
// WatchdogSec/4 (nothing when the unit has no watchdog).
void NotifyServiceWatchdog();
void NotifyServiceStatus(const std::string& line);

}  // namespace pcfarm
