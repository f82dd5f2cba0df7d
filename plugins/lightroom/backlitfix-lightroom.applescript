-- backlitfix for Lightroom Classic on macOS: a droplet. Lightroom opens it with the -Edit.tif
-- (External Editor) or the exported files (Export Actions).
-- Build: osacompile -o "$HOME/Library/Application Support/Adobe/Lightroom/Export Actions/backlitfix.app" backlitfix-lightroom.applescript
-- It runs backlitfix-lightroom.sh from ~/Library/Application Support/backlitfix/plugins/lightroom/
-- (where `backlitfix plugins install lightroom` puts it). Every path goes through `quoted form of`,
-- AppleScript's POSIX shell quoting, so no name is ever read as shell syntax.
on open theFiles
	set support to POSIX path of (path to application support folder from user domain)
	set cmd to quoted form of (support & "backlitfix/plugins/lightroom/backlitfix-lightroom.sh")
	repeat with f in theFiles
		set cmd to cmd & " " & quoted form of (POSIX path of f)
	end repeat
	try
		do shell script cmd & " 2>&1"
	on error msg
		display notification msg with title "backlitfix"
	end try
end open
