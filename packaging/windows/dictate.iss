; Inno Setup 6 script for the Windows installer (UNTESTED: no Windows machine in CI).
; packaging/build.py runs: iscc /DAppVersion=X /DDistDir=...\dist /DIconFile=...\dictate.ico /O...\dist dictate.iss
; It packs dist\dictate\ (the PyInstaller onedir bundle) into diffusion-dictate-X-setup.exe, installed
; per user by default (no admin prompt), with a Start menu entry and an optional autostart entry.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef DistDir
  #define DistDir "..\..\dist"
#endif
#ifndef IconFile
  #define IconFile "..\..\build\icons\dictate.ico"
#endif

[Setup]
AppId={{6B7C1E52-3F0A-4B8E-9C55-D1C7A0E4F2A1}
AppName=Diffusion Dictate
AppVersion={#AppVersion}
AppPublisher=Diffusion Dictate developers
DefaultDirName={autopf}\Diffusion Dictate
DefaultGroupName=Diffusion Dictate
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputBaseFilename=diffusion-dictate-{#AppVersion}-setup
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\dictate.exe
Compression=lzma2/fast
SolidCompression=no
WizardStyle=modern
CloseApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "autostart"; Description: "Start Diffusion Dictate when I sign in"; Flags: unchecked
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#DistDir}\dictate\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Diffusion Dictate"; Filename: "{app}\dictate.exe"
Name: "{group}\Uninstall Diffusion Dictate"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Diffusion Dictate"; Filename: "{app}\dictate.exe"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; ValueName: "Diffusion Dictate"; \
  ValueData: """{app}\dictate.exe"""; Flags: uninsdeletevalue; Tasks: autostart

[Run]
Filename: "{app}\dictate.exe"; Description: "{cm:LaunchProgram,Diffusion Dictate}"; Flags: nowait postinstall skipifsilent

[UninstallRun]
Filename: "{app}\dictate.exe"; Parameters: "stop"; Flags: runhidden skipifdoesntexist; RunOnceId: "StopDictation"
